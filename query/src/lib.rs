//! coldtrail's query engine: SQL over every stored table, served over the PostgreSQL wire protocol and
//! HTTP, with forensic table functions, authentication and an audit log.
//!
//! Query depends on `store` only; it reads tables and writes the query audit.
