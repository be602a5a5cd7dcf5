//! `UniRes`: the whole graph tied together (encode once, segment many expressions).
