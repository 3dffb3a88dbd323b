//! Labelled counters and gauges in the metrics registry for the UDP frontends (TFTP,
//! ProxyDHCP), every series registered at zero so it shows before its first event.

use std::sync::Arc;

use metrics::{Gauge, Key, Label, Level, Metadata, Recorder, SharedString};

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A handle on the registry the frontends count in.
#[derive(Clone)]
pub struct Counters {
    recorder: Arc<dyn Recorder + Send + Sync>,
}

impl Counters {
    /// Counters in `recorder`.
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        Self { recorder }
    }

    /// Sets the help text of counter `name`.
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.recorder
            .describe_counter(name.into(), None, SharedString::const_str(help));
    }

    /// Sets the help text of gauge `name`.
    pub fn describe_gauge(&self, name: &'static str, help: &'static str) {
        self.recorder
            .describe_gauge(name.into(), None, SharedString::const_str(help));
    }

    /// Adds `by` to the series `name{labels}`; `by == 0` registers it at zero.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &'static str)], by: u64) {
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        let c = self
            .recorder
            .register_counter(&Key::from_parts(name, labels), &META);
        if by == 0 {
            c.absolute(0);
        } else {
            c.increment(by);
        }
    }

    /// The unlabelled gauge `name`.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder.register_gauge(&Key::from_name(name), &META)
    }
}
