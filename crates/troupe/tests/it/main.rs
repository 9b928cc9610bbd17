//! End-to-end tests of the runtime with the scripted mock LLM: one binary.

mod flow;
mod persistence;
mod recovery;
mod support;
