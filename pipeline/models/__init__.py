"""The frozen foundation models and everything both halves need to run them: building CLIP and
SAM, checkpoint and weights-id resolution, devices, autocast and threads, encoder forwards, CLIP
Surgery, and the typed model options every command shares."""
