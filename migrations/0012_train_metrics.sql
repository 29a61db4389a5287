-- Training jobs (issue 14): the figures a `train` job reports, for the chart and the metrics of
-- its console page (the run folder's metrics.jsonl holds the trainer's own record). A step's
-- loss, learning rate and throughput; a validation's PLM (0..1) at its step. A resumed run
-- reports again the steps after its last checkpoint: they replace the earlier figures.
CREATE TABLE train_metrics (
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step         bigint NOT NULL CHECK (step >= 0),
    loss         double precision,
    lr           double precision,
    images_per_s double precision,
    val_plm      double precision,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, step)
);
