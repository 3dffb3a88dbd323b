//! Test support for image-factory, used by its unit and integration tests and never shipped in
//! the binary: test prerequisites ([`tools`]: skip, or fail under `IF_REQUIRE_TOOLS=1`) and the
//! QEMU runner that boots what the appliance builds ([`qemu`]), and the network namespaces
//! netboot tests run in ([`netns`]).

pub mod netns;
pub mod qemu;
pub mod tools;
