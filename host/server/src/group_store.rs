//! [`GroupCommitStore`]: the [`Store`] a server's drive goes through, so the engine's own
//! [`Driver`](stepflow_engine::Driver) is reused unchanged. Writes go to the writer thread
//! (committed with other drives' writes): a step save or a release is a future that completes
//! once durable, so one thread drives many runs while their saves wait; the other writes block
//! their caller. Reads go to the driver thread's own connection, shared by its drives (WAL
//! readers do not wait for the writer).

use std::sync::{Arc, Mutex};

use stepflow_store::{
    Claim, Deployment, DeploymentInfo, HistoryEntry, Lease, RunCounts, RunFilter, RunPage,
    RunRecord, RunStatus, Signal, SignalReceipt, SignalSend, StepSave, Store, StoreError, Subject,
    Writing,
};

use crate::writer::{OwnedSave, OwnedSignal, Request, WriterHandle};

/// A store whose writes are group-committed by the server's writer thread.
#[derive(Clone)]
pub struct GroupCommitStore {
    writer: WriterHandle,
    read: Arc<Mutex<Box<dyn Store>>>,
}

impl GroupCommitStore {
    pub(crate) fn new(writer: WriterHandle, read: Arc<Mutex<Box<dyn Store>>>) -> Self {
        GroupCommitStore { writer, read }
    }

    /// Runs `f` on the read connection (used by one drive at a time: reads do not await).
    fn with_read<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let read = self.read.lock().map_err(|_| StoreError::Backend {
            location: "the run database".into(),
            action: "reading".into(),
            source: "a driver's read connection is unusable after a panic".into(),
        })?;
        f(read.as_ref())
    }
}

impl Store for GroupCommitStore {
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        let run = Box::new(run.clone());
        self.writer
            .call("creating a run", |reply| Request::Create(run, reply))
    }

    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError> {
        let save = Box::new(OwnedSave::of(step));
        self.writer
            .call("saving a step", |reply| Request::Save(save, reply))
    }

    fn begin_save_step(&mut self, step: &StepSave<'_>) -> Writing {
        let save = Box::new(OwnedSave::of(step));
        self.writer
            .begin("saving a step", |reply| Request::Save(save, reply))
    }

    fn begin_release(&mut self, lease: &Lease) -> Writing {
        let lease = lease.clone();
        self.writer
            .begin("releasing a lease", |reply| Request::Release(lease, reply))
    }

    fn save_steps(
        &mut self,
        steps: &[StepSave<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // Sent together, so the writer commits them in one transaction.
        let pending: Vec<_> = steps
            .iter()
            .map(|step| {
                let save = Box::new(OwnedSave::of(step));
                self.writer
                    .send("saving steps", |reply| Request::Save(save, reply))
            })
            .collect::<Result<_, _>>()?;
        Ok(pending.into_iter().map(|p| p.wait()).collect())
    }

    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        self.with_read(|read| read.run(id))
    }

    fn runs_where(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.with_read(|read| read.runs_where(filter))
    }

    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.with_read(|read| read.history(run_id))
    }

    fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        self.with_read(|read| read.runs_page(filter))
    }

    fn run_counts(&self) -> Result<RunCounts, StoreError> {
        self.with_read(|read| read.run_counts())
    }

    fn start_state(&self, run_id: &str) -> Result<Option<stepflow_model::State>, StoreError> {
        self.with_read(|read| read.start_state(run_id))
    }

    fn history_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
        self.with_read(|read| read.history_page(run_id, after, limit))
    }

    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        let id = run_id.to_string();
        self.writer.call("changing a run's status", |reply| {
            Request::SetStatus(id, status, reply)
        })
    }

    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError> {
        if claim.take_over.is_some() {
            // Drivers never take over: the scheduler frees dead owners' runs at start.
            return Err(StoreError::Invalid {
                subject: Subject::Run,
                id: claim.run_id.to_string(),
                detail: "a server driver does not take runs over".into(),
            });
        }
        let (run_id, owner) = (claim.run_id.to_string(), claim.owner.to_string());
        let (ttl_ms, now_ms) = (claim.ttl_ms, claim.now_ms);
        self.writer.call("claiming a run", |reply| Request::Claim {
            run_id,
            owner,
            ttl_ms,
            now_ms,
            reply,
        })
    }

    fn renew(&mut self, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        self.writer.call("renewing a lease", |reply| {
            Request::Renew(lease, ttl_ms, now_ms, reply)
        })
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.writer
            .call("releasing a lease", |reply| Request::Release(lease, reply))
    }

    fn claim_due(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let owner = owner.to_string();
        self.writer
            .call("claiming due runs", |reply| Request::ClaimDue {
                owner,
                ttl_ms,
                now_ms,
                limit,
                reply,
            })
    }

    fn next_due_ms(&self, now_ms: u64) -> Result<Option<u64>, StoreError> {
        self.with_read(|read| read.next_due_ms(now_ms))
    }

    fn data_version(&self) -> Result<u64, StoreError> {
        self.with_read(|read| read.data_version())
    }

    fn send_signal(&mut self, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError> {
        let signal = Box::new(OwnedSignal {
            run_id: signal.run_id.to_string(),
            id: signal.id.to_string(),
            name: signal.name.to_string(),
            payload: signal.payload.clone(),
            now_ms: signal.now_ms,
        });
        self.writer
            .call("sending a signal", |reply| Request::Signal(signal, reply))
    }

    fn signals(&self, run_id: &str, after: u64, limit: usize) -> Result<Vec<Signal>, StoreError> {
        self.with_read(|read| read.signals(run_id, after, limit))
    }

    fn put_deployment(&mut self, deployment: &Deployment) -> Result<bool, StoreError> {
        let deployment = Box::new(deployment.clone());
        self.writer.call("storing a deployment", |reply| {
            Request::PutDeployment(deployment, reply)
        })
    }

    fn flows(&self) -> Result<Vec<stepflow_store::FlowInfo>, StoreError> {
        self.with_read(|read| read.flows())
    }

    fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        self.with_read(|read| read.deployment(id))
    }

    fn deployments(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentInfo>, StoreError> {
        self.with_read(|read| read.deployments(flow, limit))
    }

    fn move_run(
        &mut self,
        run_id: &str,
        deployment: &str,
        definition: &str,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        let (run_id, deployment, definition) = (
            run_id.to_string(),
            deployment.to_string(),
            definition.to_string(),
        );
        let lease = lease.clone();
        self.writer.call("moving a run", |reply| Request::MoveRun {
            run_id,
            deployment,
            definition,
            lease,
            reply,
        })
    }
}
