"""Model providers. Only ``litellm_provider`` imports litellm, and only when first used."""
