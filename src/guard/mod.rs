//! Guards that every request passes before it reaches the engine. For now: input
//! validation against the model's signed schema.

pub mod validation;

pub use validation::{InputError, validate_rows};
