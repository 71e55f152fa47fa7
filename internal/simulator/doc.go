// Package simulator is a fault simulator for the call agent's outside world:
// one HTTP server that speaks the providers' API shapes, the receivers the
// demo's sinks deliver to, an SMTP listener of its own, and an admin API.
//
// Each service lives under its own prefix, so a client's base URL is
// URL()+"/"+service:
//
//	/elevenlabs  POST /v1/text-to-speech/{voice_id}[/stream]   xi-api-key; health GET /v1/user, /v1/models
//	/llm         POST /v1/chat/completions                      Bearer; health GET /v1/models
//	/crm         POST /crm/v3/objects/calls, .../calls/search, GET|PATCH .../calls/{id}[?idProperty=]
//	                                                            Bearer; health GET /account-info/v3/details
//	             (HubSpot's own paths after the /crm prefix; also served with /crm doubled or not:
//	             /crm/crm/v3/objects/calls, /crm/crm/account-info/v3/details)
//	/telephony   POST /2010-04-01/Accounts/{sid}/Calls.json, GET .../Calls/{CallSid}.json,
//	             GET .../Calls.json?To=&From=&StartTime>=&PageSize= (the list, newest first)
//	                                                            basic sid:token; health GET /2010-04-01/Accounts/{sid}.json
//	             GET|POST /twiml: a static <Say> TwiML for setups that store no audio
//	/telegram    POST /bot<token>/sendMessage, GET /bot<token>/getMe
//	/webhook     POST /{name}                                   X-Agent-Signature checked when the scenario has a secret
//	/sheets      POST /v4/spreadsheets/{id}/values/{range}:append   (also at the root: the Google client
//	             resolves "v4/..." against an endpoint without a trailing slash by dropping /sheets)
//	/admin       GET|PUT /scenario, POST /reset, GET /side-effects, /received[/{receiver}], /requests, /peak,
//	             /media, /healthz
//
// A Scenario scripts faults per service (every kind DOMAIN.md lists: error
// statuses N times then recovery, Retry-After, rate-limit countdowns,
// concurrency and burst limits, slow and stalled answers, refused and reset
// connections, malformed, truncated, HTML and empty bodies, lost responses,
// shallow health, flapping, telephony outcomes per number) and can be
// replaced while running.
//
// Clients send X-Agent-Call-Id; the simulator counts side effects per
// service and call id (a TTS rendered, a completion, a call placed, a CRM
// record created), including those whose response was lost, so a test
// catches the duplicate a naive retry makes.
//
// Like Twilio, the telephony API plays an answered call: it requests the
// create's Url (POST unless Method says GET, with CallSid and the call's
// other parameters) or reads its inline Twiml, then GETs the audio of the
// first <Play>. The call counts as played (Media.Played, GET /admin/media)
// only if those bytes have the SHA-256 of the audio its TTS last rendered
// for the same call id; a TwiML or audio that does not load, or has the
// wrong content type, makes the call end failed. A poll that would show the
// call answered waits for that fetch.
package simulator
