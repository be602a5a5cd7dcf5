//! Proposal boxes from JSON files.
