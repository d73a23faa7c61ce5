//! placeholder until the projections helper lands the schema.
