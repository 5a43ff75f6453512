// fake-gcs: fake-gcs-server (github.com/fsouza/fake-gcs-server, its fakestorage library
// as released) on 127.0.0.1:4443 over HTTP, in memory, with one thing added: the XML
// API's object upload, `PUT /<bucket>/<object>` with an optional
// `x-goog-if-generation-match` header. Google's object_store client (delta-rs, Polars,
// DataFusion) writes every object that way, and fake-gcs-server does not serve it
// (fsouza/fake-gcs-server#331; object_store's own CI runs a fork for it). The upload is
// handed to the server's own JSON media upload with the same `ifGenerationMatch`, so the
// emulator's own code decides preconditions (the conditional create a Delta commit needs)
// and stores the object; the answer is the XML API's: 200, ETag and x-goog-generation.
// And the XML listing's `start-after` (list after a key, how delta-rs reads a log from a
// version on), which fake-gcs-server ignores: its own listing, without the keys up to it.
// Everything else is fake-gcs-server's own handler.
package main

import (
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 4443, "port to listen on")
	buckets := flag.String("buckets", "lake", "comma-separated buckets to create")
	flag.Parse()
	public := fmt.Sprintf("%s:%d", *host, *port)
	server, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme:      "http",
		Host:        *host,
		Port:        uint16(*port),
		NoListener:  true,
		PublicHost:  public,
		ExternalURL: "http://" + public,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range strings.Split(*buckets, ",") {
		if b != "" {
			server.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
		}
	}
	inner := server.HTTPHandler()
	log.Printf("fake-gcs listening on http://%s (buckets: %s)", public, *buckets)
	log.Fatal(http.ListenAndServe(public, withXMLUpload(inner)))
}

func withXMLUpload(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		path := strings.TrimPrefix(r.URL.EscapedPath(), "/")
		bucket, object, found := strings.Cut(path, "/")
		if r.Method == http.MethodGet && !found && q.Get("list-type") == "2" && q.Get("start-after") != "" {
			listAfter(inner, w, r)
			return
		}
		xmlUpload := r.Method == http.MethodPut && found && object != "" &&
			q.Get("uploadType") == "" && q.Get("X-Goog-Algorithm") == "" &&
			!strings.HasPrefix(path, "upload/") && !strings.HasPrefix(path, "storage/")
		if !xmlUpload {
			inner.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("x-goog-copy-source") != "" {
			http.Error(w, "copy is not served by this emulator", http.StatusNotImplemented)
			return
		}
		name, err := url.PathUnescape(object)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		upload := url.Values{"uploadType": {"media"}, "name": {name}}
		if match := r.Header.Get("x-goog-if-generation-match"); match != "" {
			upload.Set("ifGenerationMatch", match)
		}
		target := fmt.Sprintf("/upload/storage/v1/b/%s/o?%s", bucket, upload.Encode())
		inside := httptest.NewRequest(http.MethodPost, target, r.Body)
		inside.Host = r.Host
		if ct := r.Header.Get("Content-Type"); ct != "" {
			inside.Header.Set("Content-Type", ct)
		}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-goog-meta-") {
				inside.Header[k] = v
			}
		}
		recorder := httptest.NewRecorder()
		inner.ServeHTTP(recorder, inside)
		answer := recorder.Result()
		body, _ := io.ReadAll(answer.Body)
		if answer.StatusCode/100 != 2 {
			w.WriteHeader(answer.StatusCode)
			_, _ = w.Write(body)
			return
		}
		var stored struct {
			Generation string `json:"generation"`
			Etag       string `json:"etag"`
		}
		if err := json.Unmarshal(body, &stored); err != nil {
			http.Error(w, "unexpected upload answer: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf("%q", stored.Etag))
		w.Header().Set("x-goog-generation", stored.Generation)
		w.WriteHeader(http.StatusOK)
	})
}

// listAfter answers an XML listing with `start-after`: the server's listing without it,
// less every key and common prefix up to and including it.
func listAfter(inner http.Handler, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after := q.Get("start-after")
	q.Del("start-after")
	inside := httptest.NewRequest(http.MethodGet, r.URL.Path+"?"+q.Encode(), nil)
	inside.Host = r.Host
	recorder := httptest.NewRecorder()
	inner.ServeHTTP(recorder, inside)
	answer := recorder.Result()
	body, _ := io.ReadAll(answer.Body)
	var listing fakestorage.ListBucketResult
	if answer.StatusCode != http.StatusOK || xml.Unmarshal(body, &listing) != nil {
		w.WriteHeader(answer.StatusCode)
		_, _ = w.Write(body)
		return
	}
	contents := listing.Contents[:0]
	for _, c := range listing.Contents {
		if c.Key > after {
			contents = append(contents, c)
		}
	}
	prefixes := listing.CommonPrefixes[:0]
	for _, p := range listing.CommonPrefixes {
		if p.Prefix > after {
			prefixes = append(prefixes, p)
		}
	}
	listing.Contents, listing.CommonPrefixes, listing.KeyCount = contents, prefixes, len(contents)
	raw, err := xml.Marshal(listing)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=UTF-8")
	_, _ = w.Write([]byte(xml.Header + string(raw)))
}
