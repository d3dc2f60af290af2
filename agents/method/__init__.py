"""The method: encoders, the annotation decoder and heads, the losses, the sampler of
transitions, and the AB agent with its configuration."""
