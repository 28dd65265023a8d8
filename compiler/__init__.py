"""meshc: a policy-as-code compiler for service meshes.

Pipeline (one package or module per stage):
    load -> check -> lower -> emit -> render -> write
"""

__version__ = "0.1.0"
