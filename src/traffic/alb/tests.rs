//! The ALB door's logic on the in-memory ELBv2 fake: which colour takes a
//! generation, one `ModifyListener` per region per shift, health and
//! draining waits, and removal.

use std::time::Duration;

use super::fake::FakeElb;
use super::{AlbDoor, FrontDoor};
use crate::provider::{Instance, InstanceId, InstanceState, Lifecycle};
use crate::traffic::Weights;

const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-2"];

fn instance(region: &str, id: &str, generation: u64) -> Instance {
    Instance {
        id: InstanceId(id.to_string()),
        name: id.to_string(),
        region: region.to_string(),
        zone: None,
        instance_type: "t3.small".to_string(),
        lifecycle: Lifecycle::Spot,
        state: InstanceState::Running,
        state_reason: None,
        public_ip: None,
        private_ip: None,
        ssh: None,
        digest: None,
        version: None,
        generation: Some(generation),
        launched_at: None,
        secrets: None,
    }
}

fn fleet(generation: u64) -> Vec<Instance> {
    REGIONS
        .iter()
        .flat_map(|r| (0..2).map(move |n| instance(r, &format!("i-{r}-{generation}-{n}"), generation)))
        .collect()
}

fn door(healthy_after: i32) -> (AlbDoor<FakeElb>, Vec<FakeElb>) {
    let fakes: Vec<FakeElb> = REGIONS
        .iter()
        .map(|r| {
            let fake = FakeElb::new(r, &format!("listener-{r}"));
            fake.world.lock().unwrap().healthy_after = healthy_after;
            fake.world.lock().unwrap().draining_reads = 2;
            fake
        })
        .collect();
    let listeners = fakes
        .iter()
        .map(|f| (f.clone(), format!("listener-{}", f.region_name())))
        .collect();
    let door = AlbDoor::with_api(listeners, "web", 8080, "/health").with_poll(Duration::from_millis(1));
    (door, fakes)
}

impl FakeElb {
    fn region_name(&self) -> String {
        use super::Elbv2Api;
        self.region().to_string()
    }

    /// The listener's weights by colour.
    fn weights(&self) -> Vec<(String, i32)> {
        let world = self.world.lock().unwrap();
        let listener = world.listeners.values().next().unwrap();
        listener
            .forward
            .iter()
            .map(|(arn, w)| (world.groups[arn].0.name.clone(), *w))
            .collect()
    }
}

fn weights(pairs: &[(u64, u32)]) -> Weights {
    pairs.iter().copied().collect()
}

#[tokio::test]
async fn blue_green_registers_shifts_in_one_call_per_region_and_drains() {
    let (door, fakes) = door(2);
    let blue = fleet(1);
    door.register(1, &blue).await.unwrap();
    door.wait_healthy(1, &blue, Duration::from_secs(5)).await.unwrap();
    door.shift(&weights(&[(1, 100)])).await.unwrap();
    for fake in &fakes {
        assert_eq!(fake.count("CreateTargetGroup"), 2, "blue and green");
        assert_eq!(
            fake.weights(),
            [
                ("respot-web-blue".to_string(), 100),
                ("respot-web-green".to_string(), 0)
            ]
        );
    }

    let green = fleet(2);
    door.register(2, &green).await.unwrap();
    door.wait_healthy(2, &green, Duration::from_secs(5))
        .await
        .unwrap();
    let before: Vec<usize> = fakes
        .iter()
        .map(|f| f.world.lock().unwrap().calls.len())
        .collect();
    door.shift(&weights(&[(1, 0), (2, 100)])).await.unwrap();
    for (fake, before) in fakes.iter().zip(before) {
        let calls = fake.world.lock().unwrap().calls[before..].to_vec();
        assert_eq!(calls.len(), 1, "a shift is one call per region: {calls:?}");
        assert_eq!(calls[0].1, "ModifyListener");
        assert_eq!(
            fake.weights(),
            [
                ("respot-web-blue".to_string(), 0),
                ("respot-web-green".to_string(), 100)
            ]
        );
    }
    door.drain(&blue).await.unwrap();
    let state = door.state().await.unwrap();
    assert_eq!(state.weights, weights(&[(1, 0), (2, 100)]));
    assert_eq!(state.targets.get(&1).map(Vec::len).unwrap_or(0), 0, "{state:?}");
    assert_eq!(state.targets[&2].len(), 6);
    assert_eq!(state.serving(), Some(2));

    // Generation 3 takes blue, the colour out of the door.
    let third = fleet(3);
    door.register(3, &third).await.unwrap();
    for fake in &fakes {
        let world = fake.world.lock().unwrap();
        let (_, tags) = world
            .groups
            .values()
            .find(|(g, _)| g.name == "respot-web-blue")
            .unwrap();
        assert!(
            tags.contains(&("respot:generation".to_string(), "3".to_string())),
            "{tags:?}"
        );
    }
    let removed = door.remove().await.unwrap();
    assert_eq!(removed.len(), 6, "{removed:?}");
    for fake in &fakes {
        let world = fake.world.lock().unwrap();
        assert!(world.groups.is_empty() && world.answers_503);
    }
}

#[tokio::test]
async fn a_fresh_door_reads_its_state_from_tags_and_the_listener() {
    let (door, fakes) = door(0);
    door.register(1, &fleet(1)).await.unwrap();
    door.shift(&weights(&[(1, 100)])).await.unwrap();
    door.keep(Some(crate::traffic::Kept {
        generation: 1,
        until: std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
    }))
    .await
    .unwrap();
    let listeners = fakes
        .iter()
        .map(|f| (f.clone(), format!("listener-{}", f.region_name())))
        .collect();
    let again = AlbDoor::with_api(listeners, "web", 8080, "/health");
    let state = again.state().await.unwrap();
    assert_eq!(state.weights, weights(&[(1, 100)]));
    assert_eq!(state.targets[&1].len(), 6);
    assert_eq!(state.kept.map(|k| k.generation), Some(1));
    let err = again.shift(&weights(&[(7, 100)])).await.unwrap_err();
    assert!(
        err.to_string().contains("generation 7 is not registered"),
        "{err}"
    );
}

#[tokio::test]
async fn unhealthy_targets_time_out_naming_them() {
    let (door, _) = door(1_000);
    let blue = fleet(1);
    door.register(1, &blue).await.unwrap();
    let err = door
        .wait_healthy(1, &blue, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("i-eu-west-1-1-0 (initial)"), "{err}");
}

#[tokio::test]
async fn a_foreign_group_with_our_name_is_never_used() {
    use super::Elbv2Api;
    use super::elbv2::NewTargetGroup;
    let (door, fakes) = door(0);
    fakes[1]
        .create_target_group(&NewTargetGroup {
            name: "respot-web-blue".to_string(),
            vpc_id: "vpc-1".to_string(),
            port: 80,
            health_path: "/".to_string(),
            tags: vec![],
        })
        .await
        .unwrap();
    let err = door.register(1, &fleet(1)).await.unwrap_err();
    assert!(
        err.to_string().contains("is not tagged respot:deployment=web"),
        "{err}"
    );
}

#[test]
fn long_deployment_names_fit_elb_names() {
    let (short, _) = door(0);
    assert_eq!(short.group_name("green"), "respot-web-green");
    let long = AlbDoor::<FakeElb>::with_api(Vec::new(), &"a".repeat(40), 80, "/");
    let name = long.group_name("green");
    assert!(name.len() <= 32 && name.ends_with("-green"), "{name}");
}

#[tokio::test]
async fn remove_deletes_half_a_door_without_creating_the_other_half() {
    use super::Elbv2Api;
    use super::elbv2::NewTargetGroup;
    let (door, fakes) = door(0);
    fakes[0]
        .create_target_group(&NewTargetGroup {
            name: "respot-web-blue".to_string(),
            vpc_id: "vpc-1".to_string(),
            port: 8080,
            health_path: "/health".to_string(),
            tags: vec![("respot:deployment".to_string(), "web".to_string())],
        })
        .await
        .unwrap();
    let removed = door.remove().await.unwrap();
    assert_eq!(removed, ["target group respot-web-blue (eu-west-1)"]);
    for fake in &fakes {
        assert_eq!(
            fake.count("CreateTargetGroup"),
            usize::from(fake.region_name() == "eu-west-1")
        );
        assert!(fake.world.lock().unwrap().groups.is_empty());
    }
}

/// A loopback HTTP server answering every request with `status`, for as
/// long as the test runs; its port.
async fn answering(status: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).await;
            let answer = format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn the_probe_asks_every_regions_probe_url_and_names_the_failing_one() {
    let ok = answering("200 OK").await;
    let bad = answering("503 Service Unavailable").await;
    let url = |port: u16| crate::config::ProbeUrl::parse(&format!("http://127.0.0.1:{port}/ready")).ok();
    let (all_ok, _) = door(0);
    let probe = all_ok
        .with_probe_urls(vec![url(ok), url(ok), url(ok)])
        .probe()
        .await;
    assert!(probe.ok, "{probe:?}");
    let (one_bad, _) = door(0);
    let probe = one_bad
        .with_probe_urls(vec![url(ok), url(bad), url(ok)])
        .probe()
        .await;
    assert!(!probe.ok, "{probe:?}");
    assert_eq!(probe.detail, "us-east-1: 503");
    // Without a probe_url, the fake's balancer has no DNS name: said so.
    let (no_url, _) = door(0);
    let probe = no_url.probe().await;
    assert!(!probe.ok && probe.detail.contains("set probe_url"), "{probe:?}");
}

/// A run killed between the regions' `ModifyListener` calls: the state
/// says so, with the first region's weights; one shift mends every region.
#[tokio::test]
async fn regions_that_route_differently_are_a_diverged_door() {
    let (door, fakes) = door(0);
    door.register(1, &fleet(1)).await.unwrap();
    door.register(2, &fleet(2)).await.unwrap();
    door.shift(&weights(&[(1, 100), (2, 0)])).await.unwrap();
    assert!(!door.state().await.unwrap().diverged);
    // The second region alone went on to generation 2.
    {
        let mut world = fakes[1].world.lock().unwrap();
        let listener = world.listeners.values_mut().next().unwrap();
        for (_, weight) in listener.forward.iter_mut() {
            *weight = 100 - *weight;
        }
    }
    let state = door.state().await.unwrap();
    assert!(state.diverged, "{state:?}");
    assert_eq!(state.weights, weights(&[(1, 100), (2, 0)]), "the first region's");
    door.shift(&weights(&[(1, 100), (2, 0)])).await.unwrap();
    assert!(!door.state().await.unwrap().diverged);
    assert_eq!(fakes[1].weights()[0].1, 100, "back on blue");
}
