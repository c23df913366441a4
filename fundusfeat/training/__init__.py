"""Training the networks: pairs with known warps cut from single images (the random warps
and photometric changes live here, shared with the synthetic benchmarks), losses, the
objective, validation and the trainer with its TOML configs.
"""
