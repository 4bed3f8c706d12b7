"""The pi0 model and its building blocks (SigLIP, Gemma mixture, LoRA, tokenizer)."""
