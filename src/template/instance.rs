//! Per-instance values (`instance.id`, `.region`, `.zone`, `.index`)
//! without breaking "one digest per generation".
//!
//! respot renders them as placeholders, then hands them to cloud-init's own
//! instance-data Jinja: the document gets the `## template: jinja` header,
//! every literal part is wrapped in `{% raw %}…{% endraw %}`, and each
//! placeholder becomes `{{ v1.instance_id }}` and friends. The digest
//! covers that template, never the values, which only the instance knows.
//! The local provider's NoCloud meta-data carries the same keys.

use super::TemplateError;

/// The header that makes cloud-init render the user-data with Jinja.
pub const JINJA_HEADER: &str = "## template: jinja\n";

/// (placeholder, cloud-init instance-data expression, value for previews).
const VALUES: &[(&str, &str, &str, &str)] = &[
    (
        "id",
        "RESPOT-INSTANCE-ID-7f1c",
        "v1.instance_id",
        "i-0123456789abcdef0",
    ),
    ("region", "RESPOT-INSTANCE-REGION-7f1c", "v1.region", "eu-west-1"),
    (
        "zone",
        "RESPOT-INSTANCE-ZONE-7f1c",
        "v1.availability_zone",
        "eu-west-1a",
    ),
    (
        "index",
        "RESPOT-INSTANCE-INDEX-7f1c",
        "ds.meta_data.ami_launch_index",
        "0",
    ),
];

/// What a template sees as `instance`: the placeholders.
pub fn context() -> minijinja::Value {
    minijinja::Value::from_iter(
        VALUES
            .iter()
            .map(|(name, placeholder, _, _)| (*name, *placeholder)),
    )
}

/// Whether `text` uses a per-instance value.
pub fn uses_values(text: &[u8]) -> bool {
    VALUES.iter().any(|(_, placeholder, _, _)| {
        text.windows(placeholder.len())
            .any(|w| w == placeholder.as_bytes())
    })
}

/// `document` as a cloud-init Jinja template: the header, literal parts in
/// `raw` blocks, placeholders as instance-data expressions. Refused when a
/// literal part would end a `raw` block early.
pub fn to_jinja(document: &str, path: &str) -> Result<String, TemplateError> {
    if document.contains("endraw") {
        return Err(TemplateError::Render {
            path: path.to_string(),
            message: "the document uses per-instance values, so cloud-init renders it with Jinja, \
                      and it contains `endraw`, which would end respot's escaping; remove it"
                .to_string(),
        });
    }
    let mut out = String::from(JINJA_HEADER);
    let mut rest = document;
    while let Some((at, placeholder, expression)) = next_placeholder(rest) {
        out.push_str(&raw(&rest[..at]));
        out.push_str(&format!("{{{{ {expression} }}}}"));
        rest = &rest[at + placeholder.len()..];
    }
    out.push_str(&raw(rest));
    Ok(out)
}

/// `text` inside a `raw` block, so Jinja leaves it byte for byte.
pub fn raw(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    format!("{{% raw %}}{text}{{% endraw %}}")
}

fn next_placeholder(text: &str) -> Option<(usize, &'static str, &'static str)> {
    VALUES
        .iter()
        .filter_map(|(_, placeholder, expression, _)| {
            text.find(placeholder).map(|at| (at, *placeholder, *expression))
        })
        .min_by_key(|(at, _, _)| *at)
}

/// A Jinja document as cloud-init would render it for a sample instance,
/// for `cloud-init schema`, which has no instance data here.
pub fn preview(document: &str) -> String {
    let mut text = with_placeholders(document);
    for (_, placeholder, _, sample) in VALUES {
        text = text.replace(placeholder, sample);
    }
    text
}

/// The document [`to_jinja`] was given (the same text when not Jinja).
pub fn with_placeholders(document: &str) -> String {
    let Some(body) = document.strip_prefix(JINJA_HEADER) else {
        return document.to_string();
    };
    let mut text = body.replace("{% raw %}", "").replace("{% endraw %}", "");
    for (_, placeholder, expression, _) in VALUES {
        text = text.replace(&format!("{{{{ {expression} }}}}"), placeholder);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_instance_data_and_the_rest_is_raw() {
        let document = "#cloud-config\nwrite_files:\n  - content: |2\n      node RESPOT-INSTANCE-ID-7f1c in RESPOT-INSTANCE-ZONE-7f1c\n      {{ not jinja }} {% neither %} {# nor #}\n";
        assert!(uses_values(document.as_bytes()));
        let jinja = to_jinja(document, "t").unwrap();
        assert!(jinja.starts_with("## template: jinja\n{% raw %}#cloud-config\n"));
        assert!(jinja.contains("node {% endraw %}{{ v1.instance_id }}{% raw %} in {% endraw %}{{ v1.availability_zone }}{% raw %}\n"));
        assert!(
            jinja.contains("{{ not jinja }} {% neither %} {# nor #}\n{% endraw %}"),
            "{jinja}"
        );
        let shown = preview(&jinja);
        assert_eq!(
            shown,
            document
                .replace("RESPOT-INSTANCE-ID-7f1c", "i-0123456789abcdef0")
                .replace("RESPOT-INSTANCE-ZONE-7f1c", "eu-west-1a")
        );
        assert!(to_jinja("#cloud-config\n# {% endraw %}\n", "t").is_err());
        assert!(!uses_values(b"#cloud-config\n"));
    }
}
