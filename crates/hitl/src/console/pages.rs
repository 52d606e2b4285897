//! The console's pages, server-rendered with `maud` (every value is escaped). No inline script
//! or style: the CSP allows only `/static/console.js` and `/static/console.css`.

use std::time::{Duration, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, html};

use crate::desk::{Decided, Ending, Stage, View};
use crate::level::Factor;

/// A one-line message shown at the top of the next page.
#[derive(Debug, Clone)]
pub(super) struct Flash {
    pub(super) ok: bool,
    pub(super) text: String,
}

/// What the pending page shows.
pub(super) struct PendingPage<'a> {
    pub(super) csrf: &'a str,
    pub(super) flash: Option<Flash>,
    pub(super) items: &'a [View],
    pub(super) now_ms: i64,
    pub(super) pin_set: bool,
    pub(super) totp_active: bool,
    pub(super) keys: usize,
    /// Why WebAuthn is unavailable, if it is.
    pub(super) webauthn: Option<&'a str>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Tab {
    Pending,
    History,
    Keys,
}

fn layout(title: &str, csrf: &str, flash: Option<&Flash>, tab: Tab, body: Markup) -> Markup {
    let link = |href: &str, name: &str, this: Tab| {
        html! {
            @if tab == this { a href=(href) aria-current="page" { (name) } }
            @else { a href=(href) { (name) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf" content=(csrf);
                title { (title) " · P3AK" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "P3AK" span.sub { " approvals" } }
                    nav {
                        (link("/", "Pending", Tab::Pending))
                        (link("/history", "History", Tab::History))
                        (link("/keys", "Keys", Tab::Keys))
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    @if let Some(flash) = flash {
                        p #flash class=(if flash.ok { "flash ok" } else { "flash error" }) role="status" { (flash.text) }
                    }
                    p #js-message class="flash error" hidden {}
                    (body)
                }
            }
        }
    }
}

/// A page with a heading and one paragraph (errors, the login refusal).
pub(super) fn message_page(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · P3AK" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header.top { span.brand { "P3AK" span.sub { " approvals" } } }
                main { h1 { (title) } p.message { (text) } }
            }
        }
    }
}

/// What a request without a session gets.
pub(super) fn logged_out() -> Markup {
    message_page(
        "Log in with your link",
        "Open the console with the one-time link `p3ak up` printed, or get a new one with `p3ak hitl login`.",
    )
}

fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn span(ms: i64) -> String {
    let secs = ms.unsigned_abs().div_ceil(1000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    }
}

fn relative(at_ms: i64, now_ms: i64) -> String {
    if at_ms >= now_ms {
        format!("in {}", span(at_ms - now_ms))
    } else {
        format!("{} ago", span(now_ms - at_ms))
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn hidden(csrf: &str, view: &View) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="id" value=(view.request.id);
        input type="hidden" name="binding" value=(view.binding.to_hex());
    }
}

fn details(view: &View, now_ms: i64) -> Markup {
    let r = &view.request;
    let undo = if r.undo_window_ms() == 0 {
        "none: it runs as soon as it is approved".to_owned()
    } else {
        format!("{} after approval", span(r.undo_window_ms()))
    };
    html! {
        dl.details {
            dt { "Agent" } dd.agent { (r.agent) }
            dt { "Action" } dd.action { code { (r.action) } }
            dt { "Arguments" } dd { pre.args { (pretty(&r.args)) } }
            dt { "Level" } dd.needs { "L" (r.level) ": " (Factor::needed_for(r.level)) }
            dt { "Escalated by" } dd.rules {
                @if r.rules.is_empty() { "the policy's default" }
                @for rule in &r.rules { code.rule { (rule) } " " }
            }
            @if !r.reasons.is_empty() {
                dt { "Why" } dd.reasons {
                    ul.reasons {
                        @for reason in &r.reasons {
                            li.reason {
                                code.rule { (reason.rule) } " (" (reason.effect) ")"
                                @if let Some(why) = &reason.why { ": " span.why { (why) } }
                            }
                        }
                    }
                }
            }
            dt { "Asked" } dd.asked { (when(r.asked_ms)) " (" (relative(r.asked_ms, now_ms)) ")" }
            @if matches!(view.stage, Stage::Waiting { .. }) {
                dt { "Expires" } dd.expires { (when(r.expires_ms)) " (" (relative(r.expires_ms, now_ms)) "; then it is denied)" }
            }
            dt { "Undo window" } dd { (undo) }
            dt { "Binding" } dd { code.binding title=(view.binding.to_hex()) { (view.binding.short()) } " · id " code.id { (r.id) } " · " (r.category) }
            @if !view.confirmations.is_empty() {
                dt { "Confirmed" } dd {
                    @for c in &view.confirmations { (c.factor.to_string()) " via " (c.channel) ", " (relative(c.at_ms, now_ms)) ". " }
                }
            }
        }
    }
}

fn controls(view: &View, p: &PendingPage<'_>) -> Markup {
    let level = view.request.level;
    let webauthn_hint = match (p.webauthn, p.keys) {
        (Some(why), _) => Some(why.to_owned()),
        (None, 0) => {
            Some("No security key is registered yet: add one on the Keys page.".to_owned())
        }
        _ => None,
    };
    html! {
        @match level {
            0..=2 => {
                form.approve method="post" action="/approve" {
                    (hidden(p.csrf, view))
                    (remember_fields(view))
                    button.approve type="submit" { "Approve" }
                }
            }
            3 => {
                form.approve method="post" action="/approve" {
                    (hidden(p.csrf, view))
                    @if p.pin_set {
                        label { "PIN " input.pin type="password" name="pin" autocomplete="off" inputmode="numeric"; }
                    }
                    @if p.totp_active {
                        label { "or TOTP code " input.totp type="text" name="totp" autocomplete="one-time-code" inputmode="numeric"; }
                    }
                    (remember_fields(view))
                    button.approve type="submit" { "Approve" }
                }
            }
            _ => {
                div.webauthn-approve data-id=(view.request.id) data-binding=(view.binding.to_hex()) {
                    @if level >= 5 {
                        label { "PIN " input.webauthn-pin type="password" name="pin" autocomplete="off" inputmode="numeric"; }
                    }
                    button.webauthn.approve type="button" data-action="approve" {
                        @if level >= 5 { "Use security key + PIN" } @else { "Use security key" }
                    }
                }
            }
        }
        form.deny method="post" action="/deny" {
            input type="hidden" name="csrf" value=(p.csrf);
            input type="hidden" name="id" value=(view.request.id);
            button.deny type="submit" { "Deny" }
        }
        @if level == 3 && !p.pin_set && !p.totp_active {
            p.hint { "No PIN or TOTP code is set up: `p3ak hitl pin set`." }
        }
        @if level >= 4 {
            @if let Some(hint) = webauthn_hint { p.hint { (hint) } }
        }
    }
}

/// "Remember": one box per argument whose approved value the grant would pin, and how long.
/// Level 5 is asked for every time, so it has none.
fn remember_fields(view: &View) -> Markup {
    let r = &view.request;
    if r.level >= crate::level::MAX_LEVEL {
        return html! {};
    }
    let names: Vec<&String> = r
        .args
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    html! {
        details.remember {
            summary { "Remember: allow this again without asking" }
            @if names.is_empty() {
                label { input type="checkbox" name="remember" value="*"; " this action (it has no arguments)" }
            }
            @for name in &names {
                label { input type="checkbox" name="remember" value=(name); " same " code { (name) } }
            }
            label { " for "
                select name="remember_days" {
                    option value="1" { "1 day" }
                    option value="7" { "7 days" }
                    option value="30" selected { "30 days" }
                    option value="90" { "90 days" }
                }
            }
        }
    }
}

/// `/`: what waits, and what sits in its undo window.
pub(super) fn pending(p: &PendingPage<'_>) -> Markup {
    let waiting: Vec<&View> = p
        .items
        .iter()
        .filter(|v| matches!(v.stage, Stage::Waiting { .. }))
        .collect();
    let approved: Vec<&View> = p
        .items
        .iter()
        .filter(|v| matches!(v.stage, Stage::Approved { .. }))
        .collect();
    let body = html! {
        h1 { "Pending approvals" }
        @if waiting.is_empty() { p.empty { "Nothing waits for you." } }
        @for view in &waiting {
            article.item.waiting id=(format!("item-{}", view.request.id)) data-level=(view.request.level) {
                header {
                    h2 { code { (view.request.action) } " " span.by { "by " (view.request.agent) } }
                    span class=(format!("level level-{}", view.request.level)) { "L" (view.request.level) }
                }
                (details(view, p.now_ms))
                @if let Stage::Waiting { confirmed, needed } = view.stage {
                    @if needed > 1 {
                        p.confirmation { "Confirmation " (confirmed.saturating_add(1)) " of " (needed) }
                    }
                }
                div.controls { (controls(view, p)) }
            }
        }
        h2.section { "Approved, in their undo window" }
        @if approved.is_empty() { p.empty { "Nothing approved is waiting to leave." } }
        @for view in &approved {
            @if let Stage::Approved { approved_ms, release_ms } = view.stage {
                article.item.approved id=(format!("item-{}", view.request.id)) data-level=(view.request.level) {
                    header {
                        h2 { code { (view.request.action) } " " span.by { "by " (view.request.agent) } }
                        span class=(format!("level level-{}", view.request.level)) { "L" (view.request.level) }
                    }
                    (details(view, p.now_ms))
                    p.undo {
                        "Approved " (when(approved_ms)) "; it leaves the machine at " (when(release_ms)) ", in "
                        span.countdown data-remaining-ms=(release_ms.saturating_sub(p.now_ms)) { (span(release_ms.saturating_sub(p.now_ms))) }
                        "."
                    }
                    div.controls {
                        form.pullback method="post" action="/pullback" {
                            input type="hidden" name="csrf" value=(p.csrf);
                            input type="hidden" name="id" value=(view.request.id);
                            button.pullback type="submit" { "Pull back" }
                        }
                    }
                }
            }
        }
    };
    layout(
        "Pending approvals",
        p.csrf,
        p.flash.as_ref(),
        Tab::Pending,
        body,
    )
}

fn ending(e: Ending) -> &'static str {
    match e {
        Ending::Released => "released",
        Ending::Denied => "denied",
        Ending::PulledBack => "pulled back",
        Ending::Expired => "timed out (denied)",
        Ending::Withdrawn => "withdrawn",
    }
}

/// `/history`: decided items, newest first.
pub(super) fn history(csrf: &str, flash: Option<Flash>, items: &[Decided]) -> Markup {
    let body = html! {
        h1 { "History" }
        @if items.is_empty() { p.empty { "Nothing was decided yet in this run." } }
        @else {
            table.history {
                thead { tr { th { "When" } th { "Id" } th { "Agent" } th { "Action" } th { "Level" } th { "Outcome" } th { "Approvals" } } }
                tbody {
                    @for d in items {
                        tr id=(format!("history-{}", d.request.id)) class=(format!("ending-{:?}", d.ending).to_lowercase()) {
                            td { (when(d.at_ms)) }
                            td { code { (d.request.id) } }
                            td { (d.request.agent) }
                            td { code { (d.request.action) } }
                            td { "L" (d.request.level) }
                            td.outcome { (ending(d.ending)) }
                            td { @for c in &d.confirmations { (c.factor.to_string()) " (" (c.channel) ") " } }
                        }
                    }
                }
            }
        }
    };
    layout("History", csrf, flash.as_ref(), Tab::History, body)
}

/// `/keys`: registered passkeys and the form to add one.
pub(super) fn keys(
    csrf: &str,
    flash: Option<Flash>,
    keys: &[(String, i64)],
    pin_set: bool,
    unavailable: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "Security keys" }
        p.hint { "Passkeys approve level 4 (and, with your PIN, level 5). Each one must verify you: Touch ID, Face ID, Windows Hello, or a security key with its PIN." }
        @if keys.is_empty() { p.empty { "No key is registered yet." } }
        @else {
            table.keys {
                thead { tr { th { "Name" } th { "Added" } } }
                tbody { @for (name, added) in keys { tr { td.key-name { (name) } td { (when(*added)) } } } }
            }
        }
        h2.section { "Add a key" }
        @if let Some(why) = unavailable { p.flash.error { (why) } }
        @else {
            div #register {
                label { "Name " input #key-name type="text" maxlength="64" autocomplete="off" placeholder="laptop touch id"; }
                @if pin_set { label { "PIN " input #key-pin type="password" autocomplete="off" inputmode="numeric"; } }
                button #register-key.webauthn type="button" data-action="register" { "Register a security key" }
            }
        }
    };
    layout("Security keys", csrf, flash.as_ref(), Tab::Keys, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_people_talk() {
        assert_eq!(span(1), "1 s");
        assert_eq!(span(61_000), "1 min 1 s");
        assert_eq!(span(3_600_000 * 2 + 60_000), "2 h 1 min");
        assert_eq!(relative(10_000, 0), "in 10 s");
        assert_eq!(relative(0, 10_000), "10 s ago");
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
    }

    fn view(level: u8, reasons: Vec<crate::binding::Reason>) -> View {
        let request = crate::binding::Request {
            id: "e1".to_owned(),
            agent: "assistant".to_owned(),
            action: "bank.pay".to_owned(),
            args: serde_json::json!({"iban": "DE00", "amount": 100}),
            level,
            rules: vec!["new-payee".to_owned()],
            category: "pay".to_owned(),
            asked_ms: 0,
            expires_ms: 60_000,
            crawfish_secs: 0,
            confirm_twice: false,
            reasons,
        };
        View {
            binding: request.binding(),
            request,
            stage: Stage::Waiting {
                confirmed: 0,
                needed: 1,
            },
            confirmations: Vec::new(),
            remember: None,
        }
    }

    fn page(items: &[View]) -> String {
        pending(&PendingPage {
            csrf: "c",
            flash: None,
            items,
            now_ms: 0,
            pin_set: true,
            totp_active: false,
            keys: 0,
            webauthn: None,
        })
        .into_string()
    }

    #[test]
    fn the_approver_sees_every_rule_with_its_why_and_may_remember_below_level_five() {
        let reasons = vec![
            crate::binding::Reason {
                rule: "daily-total".to_owned(),
                effect: "level 3".to_owned(),
                why: Some("over 500 today".to_owned()),
            },
            crate::binding::Reason {
                rule: "new-payee".to_owned(),
                effect: "level 2".to_owned(),
                why: Some("never paid <this> account".to_owned()),
            },
        ];
        let text = page(&[view(3, reasons.clone())]);
        assert!(text.contains("daily-total"), "{text}");
        assert!(text.contains("over 500 today"), "{text}");
        assert!(text.contains("never paid &lt;this&gt; account"), "{text}");
        assert!(text.contains(r#"name="remember" value="iban""#), "{text}");
        assert!(text.contains(r#"name="remember_days""#), "{text}");
        let top = page(&[view(5, reasons)]);
        assert!(
            !top.contains(r#"name="remember""#),
            "level 5 offers no remember"
        );
    }

    #[test]
    fn values_are_escaped() {
        let page = message_page("<script>", "a & b \"c\"");
        let text = page.into_string();
        assert!(text.contains("&lt;script&gt;"), "{text}");
        assert!(!text.contains("<script>"), "{text}");
    }
}
