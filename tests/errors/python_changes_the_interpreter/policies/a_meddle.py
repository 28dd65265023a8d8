"""A policy file that changes the interpreter meshc runs in: meshc undoes it before going on."""
import builtins
import os
import sys

os.chdir("/")  # the policy directory and the output are relative paths
sys.setrecursionlimit(120)  # low, yet above the depth a test runner (pytest-xdist) calls meshc at
sys.modules["compiler.policy"] = None  # the next policy file imports it
builtins.isinstance = lambda *args: 1 / 0
sys.stderr = open(os.devnull, "w")
