//! Config model: parsing, validation, expansion and baking of `kepler.yaml`.

pub mod document;
pub mod expand;
pub mod values;
