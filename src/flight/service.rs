//! The `FlightService` implementation: authorization, admission and metrics around
//! the handlers in the sibling modules, which only translate to and from the engine.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::SchemaRef;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use super::auth::{self, Access};
use super::error::code_name;
use super::putbody::BodyEnd;
use super::streams::{Pool, Pools, StreamGuard, admit};
use super::ticket::GetCommand;
use super::{actions, doget, doput, info, sql};
use crate::auth::Principal;
use crate::query::Engine;

type Stream<T> = BoxStream<'static, Result<T, Status>>;

/// FastK's Flight service over one engine.
#[derive(Debug)]
pub struct FlightSvc {
    engine: Arc<Engine>,
    /// One permit per stream in progress: DoGet and DoPut from separate pools.
    pools: Pools,
    /// Flight SQL prepared statements ([`super::sql`]).
    prepared: super::sql::Prepared,
}

impl FlightSvc {
    pub fn new(engine: Arc<Engine>) -> FlightSvc {
        FlightSvc {
            pools: Pools::new(&engine),
            prepared: super::sql::Prepared::default(),
            engine,
        }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    async fn authorize<T>(&self, req: &Request<T>, access: Access) -> Result<Principal, Status> {
        let peer = auth::peer(req.extensions());
        auth::authorize(&self.engine, req.metadata(), peer, access).await
    }

    /// Counts a call that has ended by its gRPC code, and passes its result on.
    fn observed<T>(&self, method: &str, r: Result<T, Status>) -> Result<T, Status> {
        let code = r.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.engine.metrics.observe_flight(method, code_name(code));
        r
    }

    /// Counts a call refused before its stream was admitted; an admitted stream is
    /// counted by its guard when it ends.
    pub(crate) fn refused<T>(&self, method: &str, r: Result<T, Status>) -> Result<T, Status> {
        if let Err(e) = &r {
            self.engine
                .metrics
                .observe_flight(method, code_name(e.code()));
        }
        r
    }

    /// Admits a DoGet and starts its producer: auth, ticket, stream limit, then the
    /// schema and batches. Refusals are counted in the metrics here; the returned guard
    /// records how the stream ends. Shared by the wire path ([`super::wire`], which the
    /// server uses) and the generated service's `do_get`.
    /// A Flight SQL ticket (a protobuf `Any`) runs its query; any other ticket is a
    /// JSON read command.
    pub(crate) async fn open_get(
        &self,
        metadata: &MetadataMap,
        peer: Option<std::net::IpAddr>,
        ticket: &[u8],
    ) -> Result<(SchemaRef, doget::BatchStream, Arc<StreamGuard>), Status> {
        let principal = auth::authorize(&self.engine, metadata, peer, Access::Read).await;
        let admitted = principal.and_then(|principal| {
            let cmd = match sql::command(ticket) {
                Some(c) => Err(c),
                None => {
                    let cmd = GetCommand::parse(ticket)?;
                    auth::check_symbols(&self.engine, &principal, &cmd)?;
                    Ok(cmd)
                }
            };
            let guard = admit(&self.engine, &self.pools, Pool::Get, "DoGet")?;
            Ok((cmd, guard, principal))
        });
        let (cmd, guard, principal) = self.refused("DoGet", admitted)?;
        let started = match cmd {
            Ok(cmd) => doget::start(Arc::clone(&self.engine), cmd, &guard),
            Err(sql_cmd) => sql::do_get(&self.engine, &principal, &self.prepared, sql_cmd).await,
        };
        let (schema, batches) = started.inspect_err(|e| guard.finish(e.code()))?;
        Ok((schema, batches, guard))
    }

    async fn get(&self, req: Request<Ticket>) -> Result<Stream<FlightData>, Status> {
        let peer = auth::peer(req.extensions());
        let (schema, batches, guard) = self
            .open_get(req.metadata(), peer, &req.get_ref().ticket)
            .await?;
        let flight = &self.engine.config.flight;
        let stall = std::time::Duration::from_secs(flight.stall_timeout_s);
        Ok(doget::encode(
            schema,
            batches,
            flight.max_message_bytes,
            guard,
            stall,
        ))
    }

    async fn put(&self, req: Request<Streaming<FlightData>>) -> Result<Stream<PutResult>, Status> {
        // A valid token first (when tokens are configured): the scope depends on the
        // descriptor, which is in the first message.
        let authenticated = match self.engine.auth.enabled() {
            true => self.authorize(&req, Access::Token).await.map(drop),
            false => Ok(()),
        };
        let admitted =
            authenticated.and_then(|()| admit(&self.engine, &self.pools, Pool::Put, "DoPut"));
        let guard = self.refused("DoPut", admitted)?;
        let end = req.extensions().get::<BodyEnd>().cloned();
        let (metadata, peer) = (req.metadata().clone(), auth::peer(req.extensions()));
        let mut input = req.into_inner();
        let r = match doput::first_message(&self.engine, &mut input).await {
            Err(e) => Err(e),
            Ok(first) => match first
                .flight_descriptor
                .as_ref()
                .and_then(|d| sql::command(&d.cmd))
            {
                // Binding a prepared statement's parameters is part of a read.
                Some(cmd) => sql::do_put(&self.prepared, cmd, first, input, end).await,
                None => match self.put_access(&metadata, peer, &first).await {
                    Ok(p) => doput::do_put(Arc::clone(&self.engine), p, first, input, end).await,
                    Err(e) => Err(e),
                },
            },
        };
        guard.finish(r.as_ref().map_or_else(Status::code, |_| Code::Ok));
        let put = r?;
        Ok(stream::once(async move { Ok(put) }).boxed())
    }

    /// The write scope, and the descriptor's symbol within the token's patterns (a
    /// many-series `"*"` stream's rows are checked as they are grouped by symbol).
    async fn put_access(
        &self,
        metadata: &MetadataMap,
        peer: Option<std::net::IpAddr>,
        first: &FlightData,
    ) -> Result<Principal, Status> {
        let p = auth::authorize(&self.engine, metadata, peer, Access::Write).await?;
        let symbol = first
            .flight_descriptor
            .as_ref()
            .and_then(|d| d.path.get(1))
            .map(String::as_str);
        // A many-series stream is audited once its rows' symbols passed (doput).
        if let Some(s) = symbol.filter(|s| *s != "*") {
            p.check_symbol(s)
                .map_err(|e| auth::refused(&self.engine, e))?;
            auth::audit(&p, Access::Write, "DoPut");
        }
        Ok(p)
    }

    async fn action(&self, req: Request<Action>) -> Result<Stream<arrow_flight::Result>, Status> {
        if sql::is_action(&req.get_ref().r#type) {
            self.authorize(&req, Access::Read).await?;
            let a = req.get_ref();
            let bodies = sql::do_action(&self.engine, &self.prepared, &a.r#type, &a.body).await?;
            let results = bodies
                .into_iter()
                .map(|body| Ok(arrow_flight::Result { body }));
            return Ok(stream::iter(results).boxed());
        }
        let action = actions::FlightAction::parse(&req.get_ref().r#type)?;
        let p = self.authorize(&req, action.access()).await?;
        match action {
            actions::FlightAction::Health | actions::FlightAction::ShardMap => {}
            actions::FlightAction::Coverage
            | actions::FlightAction::DeleteRange
            | actions::FlightAction::LocalRead => {
                auth::check_body_symbol(&self.engine, &p, &req.get_ref().body, action.as_str())?;
            }
            actions::FlightAction::Inventory
            | actions::FlightAction::SnapshotCreate
            | actions::FlightAction::SnapshotList
            | actions::FlightAction::SnapshotDelete
            | actions::FlightAction::Admin(_) => {
                auth::check_unlimited(
                    &self.engine,
                    &p,
                    &format!("the {} action", action.as_str()),
                )?;
            }
        }
        auth::audit(&p, action.access(), action.as_str());
        if action == actions::FlightAction::LocalRead {
            let unix = req
                .extensions()
                .get::<super::conn::ConnInfo>()
                .is_some_and(|c| c.unix);
            if !unix {
                return Err(Status::failed_precondition(super::local::TCP_REFUSED));
            }
            let bodies = super::local::run(Arc::clone(&self.engine), &req.get_ref().body).await?;
            let results = bodies
                .into_iter()
                .map(|body| Ok(arrow_flight::Result { body }));
            return Ok(stream::iter(results).boxed());
        }
        let body = actions::run(Arc::clone(&self.engine), action, &req.get_ref().body).await?;
        Ok(stream::once(async move { Ok(arrow_flight::Result { body }) }).boxed())
    }
}

#[tonic::async_trait]
impl FlightService for FlightSvc {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    /// Basic credentials (`authorization: Basic base64(name:token)`) for a session
    /// bearer token, sent back as the `authorization` header and the payload, as
    /// pyarrow's `authenticate_basic_token` and ADBC's username/password expect. Without
    /// any token configured it succeeds with nothing to hand out.
    async fn handshake(
        &self,
        req: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let peer = auth::peer(req.extensions());
        let r = match self.engine.auth.handshake(header, peer).await {
            Err(e) => Err(Status::from(e)),
            Ok(session) => {
                let reply = HandshakeResponse {
                    protocol_version: 0,
                    payload: session.clone().into_bytes().into(),
                };
                let mut res = Response::new(stream::once(async { Ok(reply) }).boxed());
                if !session.is_empty() {
                    let value = format!("Bearer {session}")
                        .parse()
                        .map_err(|_| Status::internal("a session token is not ASCII"));
                    match value {
                        Ok(v) => {
                            res.metadata_mut().insert("authorization", v);
                        }
                        Err(e) => return self.observed("Handshake", Err(e)),
                    }
                }
                Ok(res)
            }
        };
        self.observed("Handshake", r)
    }

    async fn list_flights(
        &self,
        req: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let r = self.authorize(&req, Access::Read).await.and_then(|p| {
            auth::check_unlimited(&self.engine, &p, "ListFlights")?;
            let infos = info::list(&self.engine, &req.get_ref().expression)?;
            Ok(Response::new(stream::iter(infos).boxed()))
        });
        self.observed("ListFlights", r)
    }

    async fn get_flight_info(
        &self,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = match self.descriptor_access(&req).await {
            Ok(p) => match sql_descriptor(req.get_ref()) {
                Some(cmd) => {
                    sql::flight_info(&self.engine, &p, &self.prepared, cmd, req.into_inner()).await
                }
                None => {
                    info::routed_flight_info(
                        Arc::clone(&self.engine),
                        self.engine.cluster.get(),
                        req,
                    )
                    .await
                }
            }
            .map(Response::new),
            Err(e) => Err(e),
        };
        self.observed("GetFlightInfo", r)
    }

    async fn poll_flight_info(
        &self,
        _req: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let r = Err(Status::unimplemented(
            "PollFlightInfo is not supported: GetFlightInfo answers at once",
        ));
        self.observed("PollFlightInfo", r)
    }

    async fn get_schema(
        &self,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let r = match self.descriptor_access(&req).await {
            Err(e) => Err(e),
            Ok(p) => match sql_descriptor(req.get_ref()) {
                Some(cmd) => {
                    sql::flight_info(&self.engine, &p, &self.prepared, cmd, req.into_inner())
                        .await
                        .map(|i| SchemaResult { schema: i.schema })
                }
                None => info::schema(&self.engine, req.get_ref()),
            },
        }
        .map(Response::new);
        self.observed("GetSchema", r)
    }

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        self.get(req).await.map(Response::new)
    }

    async fn do_put(
        &self,
        req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.put(req).await.map(Response::new)
    }

    async fn do_exchange(
        &self,
        _req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let r = Err(Status::unimplemented(
            "DoExchange is not supported: use DoGet to read and DoPut to write",
        ));
        self.observed("DoExchange", r)
    }

    async fn do_action(
        &self,
        req: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let r = self.action(req).await.map(Response::new);
        self.observed("DoAction", r)
    }

    async fn list_actions(
        &self,
        _req: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let sql_actions = [
            sql::CREATE_PREPARED_STATEMENT,
            sql::CLOSE_PREPARED_STATEMENT,
        ]
        .into_iter()
        .map(|t| ActionType {
            r#type: t.into(),
            description: "Flight SQL prepared statements (docs/sql.md)".into(),
        });
        let list = actions::list().into_iter().chain(sql_actions).map(Ok);
        let r = Ok(Response::new(stream::iter(list).boxed()));
        self.observed("ListActions", r)
    }
}

impl FlightSvc {
    /// The read scope, and the series a (non-SQL) descriptor names within the token's
    /// symbols. A descriptor that does not parse is left to the handler's own error.
    async fn descriptor_access(
        &self,
        req: &Request<FlightDescriptor>,
    ) -> Result<Principal, Status> {
        let p = self.authorize(req, Access::Read).await?;
        if p.limited()
            && sql_descriptor(req.get_ref()).is_none()
            && let Ok(cmd) = GetCommand::from_descriptor(req.get_ref())
        {
            auth::check_symbols(&self.engine, &p, &cmd)?;
        }
        Ok(p)
    }
}

/// The Flight SQL command of a CMD descriptor, if it holds one.
fn sql_descriptor(d: &FlightDescriptor) -> Option<arrow_flight::sql::Command> {
    use arrow_flight::flight_descriptor::DescriptorType;
    (DescriptorType::try_from(d.r#type) == Ok(DescriptorType::Cmd))
        .then(|| sql::command(&d.cmd))
        .flatten()
}
