"""Developer tools: the local stack (devstack), BYOK wrapping, audit verification."""
