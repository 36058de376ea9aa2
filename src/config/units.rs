//! Which units respot starts, and in which steps.
//!
//! Every unit under `instance/units/` is enabled and started, except
//! template units (`a@.service`) and a service activated by a timer,
//! socket or path unit of the same name.
//!
//! Without `deployment.units`, no order is declared: all of them start in
//! one `systemctl enable --now` (one call, its jobs queued in file name
//! order; ordering between them is the units' own `After=`). With it, each
//! string is a step that starts after the one before has started, and an
//! array is a group started together in one call. So a list of N strings
//! costs N calls, and grouping what needs no order saves the rest.

use super::files::UnitStep;

const ACTIVATORS: [&str; 3] = ["timer", "socket", "path"];

/// Why the unit `name` (one of `all`) is not started directly, if it is not.
pub fn not_started_because(name: &str, all: &[String]) -> Option<String> {
    if name.contains("@.") {
        return Some(format!(
            "`{name}` is a template unit; systemd starts its instances, respot starts none"
        ));
    }
    let stem = name.strip_suffix(".service")?;
    ACTIVATORS.iter().find_map(|activator| {
        let by = format!("{stem}.{activator}");
        all.contains(&by)
            .then(|| format!("`{name}` is activated by `{by}`; list `{by}` instead"))
    })
}

/// The units respot starts, of the unit file names `all`, in file name
/// order.
pub fn startable(all: &[String]) -> Vec<String> {
    let mut names: Vec<String> = all
        .iter()
        .filter(|n| not_started_because(n, all).is_none())
        .cloned()
        .collect();
    names.sort();
    names
}

/// The start steps: each inner list is one `systemctl enable --now` call,
/// run after the one before. `order` is `deployment.units` (validated to
/// name exactly the startable units).
pub fn start_steps(order: Option<&[UnitStep]>, all: &[String]) -> Vec<Vec<String>> {
    match order {
        Some(steps) => steps.iter().map(|s| s.names().to_vec()).collect(),
        None => {
            let names = startable(all);
            if names.is_empty() { Vec::new() } else { vec![names] }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn activated_and_template_units_are_not_started() {
        let all = names(&[
            "b.timer",
            "b.service",
            "a.service",
            "c@.service",
            "d.socket",
            "d.service",
        ]);
        assert_eq!(startable(&all), names(&["a.service", "b.timer", "d.socket"]));
        assert!(
            not_started_because("b.service", &all)
                .unwrap()
                .contains("list `b.timer`")
        );
        assert!(
            not_started_because("c@.service", &all)
                .unwrap()
                .contains("template")
        );
        assert_eq!(not_started_because("a.service", &all), None);
    }

    #[test]
    fn steps_follow_the_list_or_start_all_at_once() {
        let all = names(&["b.service", "a.service", "c.service"]);
        assert_eq!(
            start_steps(None, &all),
            vec![names(&["a.service", "b.service", "c.service"])]
        );
        assert_eq!(start_steps(None, &[]), Vec::<Vec<String>>::new());
        let order = [
            UnitStep::One("c.service".into()),
            UnitStep::Together(names(&["a.service", "b.service"])),
        ];
        assert_eq!(
            start_steps(Some(&order), &all),
            vec![names(&["c.service"]), names(&["a.service", "b.service"])]
        );
    }
}
