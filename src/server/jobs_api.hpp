// The job API's routes on cpp-httplib (docs/JOBS.md): POST/GET /v1/jobs, one job, its events
// as server-sent events, its result in any format, ZIP archives of one or several jobs, DELETE
// to cancel or remove. The API key check is the server's pre-routing, as for every /v1/ path.
#pragma once

namespace httplib {
class Server;
}

namespace ifw::server {

class JobManager;

// `max_streams`: event streams open at once (each holds a connection's thread); more get 429.
void add_job_routes(httplib::Server& server, JobManager& jobs, int max_streams);

}  // namespace ifw::server
