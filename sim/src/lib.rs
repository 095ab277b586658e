//! Deterministic fault simulator for the lockmesh core.
