"""Stage 0, the inputs: variant and suite configs, cases, prompt templates, fingerprints."""
