"""D_ref composites (DESIGN §5): Mosaic (absolute position) and fusion (relative position) of
D_sem objects. `plan` draws which sources go where, `render` materialises a plan with every
object's transformed pseudo-label, `text` words an unambiguous expression for it."""
