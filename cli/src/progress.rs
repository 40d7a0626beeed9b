//! Progress of `apply`, step by step: the shared crate runs every plan step
//! inside a `step` span (`headroom::run::apply`); this layer prints one line when
//! each closes, that is when its AWS or Kubernetes call has answered, with
//! its fields and duration, marked failed if the step logged an error.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::style::Style;

/// Where the lines go: stderr for a person, a buffer for tests.
pub type Sink = Arc<Mutex<dyn std::io::Write + Send>>;

pub struct Progress {
    style: Style,
    sink: Sink,
}

impl Progress {
    pub fn new(style: Style, sink: Sink) -> Self {
        Progress { style, sink }
    }
}

struct StepState {
    started: Instant,
    /// `step=create-subnet az=us-west-2a cidr=100.64.0.0/19`
    fields: String,
    step: String,
    failed: Option<String>,
}

#[derive(Default)]
struct Fields {
    step: String,
    rest: String,
    message: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "step" => self.step = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "step" => self.step = value.to_owned(),
            "message" => self.message = value.to_owned(),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Progress
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "step" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(StepState {
                started: Instant::now(),
                fields: fields.rest.trim().to_owned(),
                step: fields.step,
                failed: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::WARN {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            let mut extensions = span.extensions_mut();
            if let Some(state) = extensions.get_mut::<StepState>() {
                if *event.metadata().level() == Level::ERROR {
                    let mut fields = Fields::default();
                    event.record(&mut fields);
                    state.failed = Some(format!("{}{}", fields.message, fields.rest));
                }
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(state) = extensions.get::<StepState>() else { return };
        let ms = state.started.elapsed().as_millis();
        let style = self.style;
        let mark = if state.failed.is_some() { style.bad("✗") } else { style.good("✓") };
        let mut parts = vec![mark, state.step.clone()];
        if !state.fields.is_empty() {
            parts.push(state.fields.clone());
        }
        parts.push(style.dim(&format!("({ms} ms)")));
        let mut line = format!("  {}", parts.join(" "));
        if let Some(why) = &state.failed {
            let _ = write!(line, ": {why}");
        }
        if let Ok(mut sink) = self.sink.lock() {
            let _ = writeln!(sink, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_per_step_as_it_closes_marked_failed_when_it_logged_an_error() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = Arc::new(Mutex::new(Buffer(bytes.clone())));
        let subscriber = tracing_subscriber::registry().with(Progress::new(Style::PLAIN, sink));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("cluster", cluster = "demo").in_scope(|| {
                tracing::info_span!("step", step = "create-subnet", az = "us-west-2a").in_scope(|| {
                    tracing::warn!("a retry is no failure");
                });
                tracing::info_span!("step", step = "associate-route-table", subnet = "subnet-1").in_scope(|| {
                    tracing::error!(error = "UnauthorizedOperation", "step failed");
                });
                tracing::info!("outside any step: not a line");
            });
        });
        let text = String::from_utf8(bytes.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("  ✓ create-subnet az=us-west-2a ("), "{text}");
        assert!(lines[0].ends_with(" ms)"), "{text}");
        assert!(lines[1].starts_with("  ✗ associate-route-table subnet=subnet-1 ("), "{text}");
        assert!(lines[1].ends_with("): step failed error=UnauthorizedOperation"), "{text}");
    }
}
