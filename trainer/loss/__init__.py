"""The set loss, DETR's way: Hungarian matching and one loss_* per term."""
