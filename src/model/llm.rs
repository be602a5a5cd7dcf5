//! LLaMA-family decoder with KV cache over `inputs_embeds`, HF `LlamaModel` semantics.
