//! chatflow's integration tests, one binary. Tests that run the `chatflow` binary use the one
//! cargo built for this test run.

mod browser;
mod catalog;
mod checkpoints;
mod cli;
mod clickhouse;
mod decode;
mod import;
mod irc;
mod kafka;
mod mission;
mod netns;
mod network;
mod newcomer;
mod oracle;
mod retention;
mod serve;
mod support;
mod views;
