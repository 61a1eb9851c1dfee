//! Config model: parsing, validation, expansion and baking of `kepler.yaml`.
