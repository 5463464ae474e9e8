import os

os.environ.setdefault("FTLAB_QUIET", "1")
