//! Prompt assembly: tokenizer, special tokens, placement of image and region embeddings.
