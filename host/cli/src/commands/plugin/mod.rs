//! `stepflow plugin new|build|test`: a plugin project in a folder of its own, outside this
//! repository, scaffolded, built and tried with one command each.

mod build;
mod files;
mod new;
mod test;

pub use build::build;
pub use new::new;
pub use test::test;
