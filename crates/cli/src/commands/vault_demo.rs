//! `p3ak vault demo`: the whole life of a vault, on embedded sample documents, in a temporary
//! directory that is removed afterwards (`p3ak_memory::demo` runs it; this prints it).

use p3ak_memory::demo::{self, DemoEvent};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, out: &Output) -> anyhow::Result<()> {
    let steps = demo::run(&mut |event| match event {
        DemoEvent::Started(path) => out.line(format!(
            "P3AK demo: a temporary encrypted vault at {}",
            path.display()
        )),
        DemoEvent::Step(step) => out.line(format!(
            "{:<8} {}  ({} ms)",
            format!("{}:", step.step),
            step.detail,
            step.millis
        )),
    })?;
    out.json(&serde_json::json!({ "ok": true, "steps": steps }));
    out.line("demo complete; the temporary vault is removed");
    Ok(())
}
