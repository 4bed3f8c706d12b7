"""openpi: the pi0 vision-language-action model in JAX."""
