# End of the run: which of this run's jobs have no MLflow run and why (harness train's warning is only in the job's
# log), and runs the store has lost (a store deleted or recreated during the run leaves dead links). The same
# report goes into each verdict (`tracking`). Bounded like the logging itself (MLFLOW_TIMEOUT).


def tracking_summary():
    from harness.track import configure, format_tracking, tracking_report

    results = []
    for d in sorted(JOBS):
        path = Path(WORK) / d / "result.json"
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # not trained (yet): nothing to say about its tracking
    if results:
        configure(MLFLOW_TIMEOUT)
        for line in format_tracking(tracking_report(MLFLOW_URI, results)):
            print(line, file=sys.stderr)


onsuccess:
    tracking_summary()


onerror:
    tracking_summary()
