//! Device simulators (`hlbridge simulate ...`): our own stand-ins for real devices, following
//! `shared/protocols` exactly, for the demo, the tests and the benchmark.

pub mod goe;
