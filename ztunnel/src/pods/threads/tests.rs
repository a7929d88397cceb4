use super::*;

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

async fn runs_on(thread: &PodThread) -> String {
    thread
        .handle()
        .spawn(async { thread_name() })
        .await
        .unwrap()
}

#[tokio::test]
async fn pods_spread_over_the_workers_and_a_removed_pod_frees_its_worker() {
    let workers = Arc::new(hbone::Workers::start("pod-worker", 2).unwrap());
    let threads = DataThreads::Workers(workers.clone());
    let first = threads.place();
    let second = threads.place();
    assert_eq!(workers.open_connections(), [1, 1]);
    let (on_first, on_second) = (runs_on(&first).await, runs_on(&second).await);
    assert!(on_first.starts_with("pod-worker-"), "ran on {on_first:?}");
    assert_ne!(
        on_first, on_second,
        "two pods share a worker while one is idle"
    );

    drop(first);
    let third = threads.place();
    assert_eq!(
        runs_on(&third).await,
        on_first,
        "the freed worker was not reused"
    );
}

#[tokio::test]
async fn in_a_test_every_pod_runs_on_the_tests_runtime() {
    let threads = DataThreads::Runtime(Handle::current());
    let pod = threads.place();
    let here = thread_name();
    assert_eq!(runs_on(&pod).await, here);
}
