"""Pure numerical core: numpy / astropy / sep / photutils / scipy only (no torch, no Qt)."""
