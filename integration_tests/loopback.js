// Preloaded with `node -r` in front of kinesis-mock, which has no host setting and binds every interface.
// Forces every server it opens to listen on 127.0.0.1 only (the project's rule for servers started in tests).
'use strict';
const net = require('net');
const LOOPBACK = '127.0.0.1';
const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length > 0 && args[0] !== null && typeof args[0] === 'object' && !Array.isArray(args[0])
      && typeof args[0].fd === 'undefined' && typeof args[0].path === 'undefined') {
    args[0] = Object.assign({}, args[0], { host: LOOPBACK });
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (typeof args[1] === 'string') {
      args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return originalListen.apply(this, args);
};
