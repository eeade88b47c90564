"""The networks (torch ``nn.Module``s) and their registry (:mod:`.registry`)."""
