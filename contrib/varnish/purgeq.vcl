# purgeq's part of a Varnish configuration (Varnish 6.0 and later, VCL 4.1):
# purgeq purges a file with `PURGE <path?query>` and a directory with
# `BAN <directory path>`, each with the URL's `Host`, before it purges the
# CDN (README, "Origin caches").
#
# Include it in the site's VCL after `vcl 4.1;` and the backends, before
# the site's own subroutines:
#
#     include "/etc/varnish/purgeq.vcl";
#
# Varnish runs an included `sub vcl_recv` before the site's own one of the
# same name, so PURGE and BAN are answered here and never reach the site's
# rules; every other request is left to them.

# Who may purge: the host purgeq runs on. A fleet's leader purges every
# origin's Varnish from its own address: add each purgeq host here.
acl purgeq_purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ purgeq_purgers) {
            return (synth(405, "purges are not allowed from this address"));
        }
        if (req.method == "PURGE") {
            # The object of this host and URL (the default vcl_hash keys
            # by both), every variant of it.
            return (purge);
        }
        # Every object of this host whose URL starts with the directory's
        # path. A ban on obj.* only, so the ban lurker can test it against
        # stored objects in the background ("lurker-friendly"): requests
        # never pay for it. The path is matched as text: the characters a
        # regular expression reads are escaped.
        ban("obj.http.x-host == " + req.http.host +
            " && obj.http.x-url ~ ^" + regsuball(req.url, "([][\\.^$|?*+(){}])", "\\\1"));
        return (synth(200, "Banned"));
    }
}

sub vcl_backend_response {
    # What the bans above test, stored with each object.
    set beresp.http.x-url = bereq.url;
    set beresp.http.x-host = bereq.http.host;
}

sub vcl_deliver {
    # Kept for the bans, never shown to clients.
    unset resp.http.x-url;
    unset resp.http.x-host;
}
