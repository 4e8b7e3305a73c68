//! Gateway configuration (being written).
