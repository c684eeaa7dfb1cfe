//! The command table: learned from the cluster (COMMAND key specs), with key extraction.
