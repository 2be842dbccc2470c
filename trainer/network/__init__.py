"""The trainable network and the frozen parts it runs through: CLIP stage/word features, the point
generator, the soft-prompt SAM decoder, and the model that joins them."""
