"""Architecture proposals as generated source code, for the offline advisor.

`architect.py` decides what to write (a targeted edit of the user's source, or a new
module from `image.py`, `mlp.py` or `transformer.py`, at a standard, compact or minimal
size); `module_file.py` writes a generated architecture around the original's
contract, which `source.py` reads from the original with `ast`. Nothing here runs the
code it writes: the sandbox checks it.
"""
