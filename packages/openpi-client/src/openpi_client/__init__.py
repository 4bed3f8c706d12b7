"""Client side of the openpi policy server: websocket + msgpack-numpy, no JAX."""
