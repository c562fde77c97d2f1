//! The handful of Firestore RPCs the store is built from — get, query, commit, and read-write
//! transactions — over the `firestore` crate's authenticated gRPC channel. The store speaks the
//! API directly rather than through the crate's fluent layer because its correctness rests on
//! exact write preconditions (`exists: false` to claim an id or a version, `exists: true` so a
//! write never resurrects a deleted document) inside one atomic commit, and those map one to one
//! onto `Write` messages.

use std::future::Future;
use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::structured_query::{
    CollectionSelector, Direction, FieldReference, Filter, Order, field_filter, filter,
};
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{
    BeginTransactionRequest, CommitRequest, Cursor, Document, DocumentMask, GetDocumentRequest,
    Precondition, RollbackRequest, RunQueryRequest, StructuredQuery, TransactionOptions, Value,
    Write, get_document_request, precondition, run_query_request, transaction_options, write,
};
use firestore::gcloud_sdk::tonic::{self, Code, Status};

use super::backend;
use super::value::Fields;
use crate::registry::StoreResult;

/// How long one RPC may take before the store gives up on it: a registry read sits on a device's
/// request path, which must answer well inside the device's own timeout.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a transaction that Firestore aborted for contention is run again.
const TRANSACTION_ATTEMPTS: usize = 5;

/// The longest pause before the first rerun of an aborted transaction; it doubles with each.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Firestore's id for a document's name in queries and orderings.
const NAME_FIELD: &str = "__name__";

/// A handle on one database. Paths given to it are relative to the database's documents, the
/// form resource names already have (`projects/p/locations/l/registries/r`).
#[derive(Clone)]
pub(super) struct Rpc {
    db: FirestoreDb,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("database", self.db.get_database_path())
            .finish()
    }
}

/// A read-write transaction's id.
pub(super) type TxId = Vec<u8>;

impl Rpc {
    pub(super) fn new(db: FirestoreDb) -> Self {
        Self { db }
    }

    /// The full document name of a relative path.
    pub(super) fn full(&self, path: &str) -> String {
        format!("{}/{path}", self.db.get_documents_path())
    }

    /// The relative path of a full document name.
    pub(super) fn relative<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.db.get_documents_path().as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(full)
    }

    /// Reads a document; `None` when it does not exist.
    pub(super) async fn get(&self, path: &str, tx: Option<&TxId>) -> StoreResult<Option<Document>> {
        let request = GetDocumentRequest {
            name: self.full(path),
            mask: None,
            request_options: None,
            consistency_selector: tx
                .map(|id| get_document_request::ConsistencySelector::Transaction(id.clone())),
        };
        match self.db.client().get().get_document(timed(request)).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(backend(status)),
        }
    }

    /// Runs a query over the collection `collection` under `parent` (a relative path, empty for
    /// the database root) and returns every document it yields.
    pub(super) async fn query(
        &self,
        parent: &str,
        query: StructuredQuery,
        tx: Option<&TxId>,
    ) -> StoreResult<Vec<Document>> {
        let parent = match parent {
            "" => self.db.get_documents_path().clone(),
            path => self.full(path),
        };
        let request = RunQueryRequest {
            parent,
            query_type: Some(run_query_request::QueryType::StructuredQuery(query)),
            consistency_selector: tx
                .map(|id| run_query_request::ConsistencySelector::Transaction(id.clone())),
            explain_options: None,
            request_options: None,
        };
        let mut stream = self
            .db
            .client()
            .get()
            .run_query(timed(request))
            .await
            .map_err(backend)?
            .into_inner();
        let mut documents = Vec::new();
        while let Some(response) = stream.message().await.map_err(backend)? {
            documents.extend(response.document);
        }
        Ok(documents)
    }

    /// Applies `writes` atomically: all or none. The caller interprets a failed precondition.
    pub(super) async fn commit(&self, writes: Vec<Write>, tx: Option<TxId>) -> Result<(), Status> {
        let request = CommitRequest {
            database: self.db.get_database_path().clone(),
            writes,
            transaction: tx.unwrap_or_default(),
            request_options: None,
        };
        self.db.client().get().commit(timed(request)).await?;
        Ok(())
    }

    /// Runs `body` in a read-write transaction: its reads (given the transaction id) lock what
    /// they read, and the writes it returns commit only if nothing it read changed meanwhile.
    /// Firestore aborts a transaction that lost a race; it is then run again, a few times. A
    /// commit refused for another reason (a failed precondition) is the inner `Err`, for the
    /// caller to interpret.
    pub(super) async fn in_transaction<T, F, Fut>(&self, body: F) -> StoreResult<Result<T, Status>>
    where
        F: Fn(TxId) -> Fut,
        Fut: Future<Output = StoreResult<(T, Vec<Write>)>>,
    {
        let mut last = None;
        for attempt in 0..TRANSACTION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            let id = self.begin().await?;
            let (out, writes) = match body(id.clone()).await {
                Ok(done) => done,
                Err(err) => {
                    self.rollback(id).await;
                    return Err(err);
                }
            };
            match self.commit(writes, Some(id)).await {
                Ok(()) => return Ok(Ok(out)),
                Err(status) if status.code() == Code::Aborted => last = Some(status),
                Err(status) => return Ok(Err(status)),
            }
        }
        Err(backend(last.map_or_else(
            || "the transaction could not run".to_string(),
            |status| format!("the transaction kept losing races: {status}"),
        )))
    }

    async fn begin(&self) -> StoreResult<TxId> {
        let request = BeginTransactionRequest {
            database: self.db.get_database_path().clone(),
            options: Some(TransactionOptions {
                mode: Some(transaction_options::Mode::ReadWrite(
                    transaction_options::ReadWrite::default(),
                )),
            }),
            request_options: None,
        };
        let response = self
            .db
            .client()
            .get()
            .begin_transaction(timed(request))
            .await
            .map_err(backend)?;
        Ok(response.into_inner().transaction)
    }

    /// Releases a transaction's locks early; if this fails they lapse on their own.
    async fn rollback(&self, transaction: TxId) {
        let request = RollbackRequest {
            database: self.db.get_database_path().clone(),
            transaction,
            request_options: None,
        };
        if let Err(status) = self.db.client().get().rollback(timed(request)).await {
            tracing::debug!(%status, "Firestore rollback failed; the locks lapse on their own");
        }
    }

    /// A write creating `path`, failing with `ALREADY_EXISTS` if it exists.
    pub(super) fn create(&self, path: &str, fields: Fields) -> Write {
        self.put(path, fields, None, Some(false))
    }

    /// A write setting the `mask` fields of an existing `path` (a field in the mask but not in
    /// `fields` is removed), failing with `NOT_FOUND` if the document is gone. A mask entry may
    /// be a nested path (`gatewayConfig.gatewayAuthMethod`): it sets that one entry of a map and
    /// leaves the map's other entries as they are.
    pub(super) fn update(&self, path: &str, mut fields: Fields, mask: &[&str]) -> Write {
        // Firestore refuses fields the mask does not name; callers encode whole resources.
        retain_paths(&mut fields, mask);
        let mask = DocumentMask {
            field_paths: mask.iter().map(|f| f.to_string()).collect(),
        };
        self.put(path, fields, Some(mask), Some(true))
    }

    /// A write setting exactly the given fields of an existing `path`, failing with `NOT_FOUND`
    /// if the document is gone.
    pub(super) fn patch(&self, path: &str, fields: Fields) -> Write {
        let mask = DocumentMask {
            field_paths: fields.keys().cloned().collect(),
        };
        self.put(path, fields, Some(mask), Some(true))
    }

    /// A write replacing `path` with `fields`, whether or not it exists.
    pub(super) fn set(&self, path: &str, fields: Fields) -> Write {
        self.put(path, fields, None, None)
    }

    /// A write deleting `path` if it exists.
    pub(super) fn delete(&self, path: &str) -> Write {
        Write {
            operation: Some(write::Operation::Delete(self.full(path))),
            ..Default::default()
        }
    }

    fn put(
        &self,
        path: &str,
        fields: Fields,
        mask: Option<DocumentMask>,
        exists: Option<bool>,
    ) -> Write {
        Write {
            update_mask: mask,
            update_transforms: Vec::new(),
            current_document: exists.map(|exists| Precondition {
                condition_type: Some(precondition::ConditionType::Exists(exists)),
            }),
            operation: Some(write::Operation::Update(Document {
                name: self.full(path),
                fields,
                create_time: None,
                update_time: None,
            })),
        }
    }
}

/// A random pause before rerun `attempt` of an aborted transaction. Transactions that read and
/// then write one document (a gateway's binding count) abort together when they collide; rerun
/// at once, they would collide again, so each waits a random share of a doubling window.
fn retry_pause(attempt: usize) -> Duration {
    let mut bytes = [0u8; 2];
    // Without randomness the window's middle serves, only less well.
    let share = match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    let window = RETRY_PAUSE * (1 << attempt.min(8)) / 2;
    window.mul_f64(share)
}

/// Keeps of `fields` only what the field paths `paths` name, descending into maps for nested
/// paths. The store's field names are plain identifiers, so a path is its names joined by dots,
/// with no quoting.
fn retain_paths(fields: &mut Fields, paths: &[&str]) {
    fields.retain(|name, value| {
        if paths.contains(&name.as_str()) {
            return true;
        }
        let nested: Vec<&str> = paths
            .iter()
            .filter_map(|p| p.strip_prefix(name.as_str())?.strip_prefix('.'))
            .collect();
        match &mut value.value_type {
            Some(ValueType::MapValue(map)) if !nested.is_empty() => {
                retain_paths(&mut map.fields, &nested);
                // An emptied map would name entries the mask does not: the masked ones are unset.
                !map.fields.is_empty()
            }
            _ => false,
        }
    });
}

/// A request that gives up after [`RPC_TIMEOUT`].
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_TIMEOUT);
    request
}

/// A query over one collection, ordered by document name (ids sort like the SQLite store's).
pub(super) fn ordered(
    collection: &str,
    filter: Option<Filter>,
    limit: Option<usize>,
) -> StructuredQuery {
    StructuredQuery {
        from: vec![CollectionSelector {
            collection_id: collection.into(),
            all_descendants: false,
        }],
        r#where: filter,
        order_by: vec![Order {
            field: Some(field(NAME_FIELD)),
            direction: Direction::Ascending as i32,
        }],
        limit: limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        ..Default::default()
    }
}

/// A filter comparing a field with a value.
pub(super) fn compare(name: &str, op: field_filter::Operator, value: Value) -> Filter {
    Filter {
        filter_type: Some(filter::FilterType::FieldFilter(
            firestore::gcloud_sdk::google::firestore::v1::structured_query::FieldFilter {
                field: Some(field(name)),
                op: op as i32,
                value: Some(value),
            },
        )),
    }
}

/// A filter on the document name, e.g. "after this id".
pub(super) fn name_after(full_name: String) -> Filter {
    compare(
        NAME_FIELD,
        field_filter::Operator::GreaterThan,
        super::value::reference(full_name),
    )
}

/// Starts `query` (ordered by name) just after the document `full_name`: the next page of a
/// scan, however the filter narrows it.
pub(super) fn resume_after(query: &mut StructuredQuery, full_name: String) {
    query.start_at = Some(Cursor {
        values: vec![super::value::reference(full_name)],
        before: false,
    });
}

/// The document name as a field, e.g. to fetch names only.
pub(super) fn name_field() -> FieldReference {
    field(NAME_FIELD)
}

fn field(path: &str) -> FieldReference {
    FieldReference {
        field_path: path.into(),
    }
}

/// The last segment of a document name: its id.
pub(super) fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
