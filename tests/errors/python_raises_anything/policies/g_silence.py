import os
import sys

sys.stderr = open(os.devnull, "w")
raise ValueError("you cannot hide this")
