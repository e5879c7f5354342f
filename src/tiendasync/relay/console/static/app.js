/* tiendasync relay console: a small single page app, no build step, no dependencies.
 *
 * Routes (hash): #/login, #/stores, #/conflicts, #/conflict/<id>, #/log, #/nodes.
 * Data: the JSON admin API under /api/sync/ with "Authorization: Bearer <admin token>";
 * the token lives in sessionStorage (this tab only), the language in localStorage.
 * The data types and the resolution actions come from the server's model tables
 * (GET /api/sync/model/, fetched once after login); this file only holds their labels.
 * Every page refreshes itself every POLL_MS while the tab is visible.
 * All data is written with textContent (never innerHTML): store data is untrusted.
 */
(function () {
  'use strict';

  var POLL_MS = 2000;
  var TOKEN_KEY = 'tiendasync.console.token';
  var TENANT_KEY = 'tiendasync.console.tenant';
  var LANG_KEY = 'tiendasync.console.lang';
  var BY_KEY = 'tiendasync.console.by';

  /* How the console offers the actions of the model's table (presentation only: the table
   * says which parameters an action takes and which conflicts it applies to).
   * onlyFor / hideFor: invariants where the console shows / does not show its form;
   * joins: its button goes into that action's form (same parameters); title: the actions
   * a form's heading names; help: the i18n key of its help text.  An action not listed
   * here gets a plain form: one input per parameter, its label or name, the server's help. */
  var ACTION_UI = {
    accept: { style: 'btn-secondary', hideFor: ['catalog_review'] },
    adjust: { onlyFor: ['non_negative_stock'] },
    recount: { onlyFor: ['non_negative_stock'] },
    transfer: { onlyFor: ['non_negative_stock'] },
    void: { style: 'btn-danger', hideFor: ['catalog_review'] },
    keep_central: { title: ['keep_central', 'keep_local'], help: 'act.keep.help' },
    keep_local: { style: 'btn-secondary', joins: 'keep_central' }
  };

  /* Inputs of action parameters, by parameter name: label (i18n key), first value
   * (a function of the conflict), select: 'details' for a choice among the fields of a
   * catalog review. */
  var PARAM_UI = {
    quantity: { label: 'quantity', value: function (c) { return c.observed !== null && c.observed < 0 ? -c.observed : 1; } },
    count: { label: 'count', value: function () { return 0; } },
    from_location: { label: 'from_location' },
    sku: { label: 'target_sku' },
    field: { label: 'field', select: 'details' }
  };

  /* ------------------------------------------------------------------ i18n */

  var I18N = {
    es: {
      skip: 'Saltar al contenido', console: 'Consola del relay', nav: 'Principal',
      'nav.stores': 'Tiendas', 'nav.conflicts': 'Conflictos', 'nav.log': 'Registro de sincronización',
      tenant: 'Cliente', logout: 'Salir', footer: 'Se actualiza cada 2 s',
      updated: 'Actualizado {time}', offline_api: 'Sin conexión con el relay: reintentando…',
      'login.title': 'Entrar', 'login.token': 'Token de administrador',
      'login.help': 'Créelo en el servidor del relay con:',
      'login.submit': 'Entrar', 'login.bad': 'Token no válido o sin permisos de administrador.',
      'login.expired': 'La sesión terminó: vuelva a introducir el token.',
      'login.checking': 'Comprobando…',
      'stores.title': 'Tiendas', 'stores.none': 'Todavía no hay tiendas con token en este cliente.',
      online: 'En línea', offline: 'Desconectada',
      last_sync: 'Última sincronización', never: 'nunca', outcome: 'Resultado',
      duration: 'Duración', updates_inout: 'Actualizaciones (recibidas / enviadas)',
      bytes_inout: 'Bytes (recibidos / enviados)', docs: 'Documentos',
      sync_now: 'Sincronizar ahora', sync_now_full: 'Sincronización completa',
      sync_requested: 'Sincronización pedida a {r}.', sync_offline: '{r} no está conectada ahora.',
      edit_config: 'Editar configuración', close_config: 'Cerrar configuración',
      config: 'Configuración', 'cfg.relay_url': 'URL del relay', 'cfg.relay_url.help': 'ws:// o wss://; vacío: la que use la tienda',
      'cfg.enabled': 'Sincronización activada', 'cfg.interval_s': 'Intervalo (s)',
      'cfg.batch_size': 'Tamaño de lote', 'cfg.backoff_min_s': 'Espera mínima tras error (s)',
      'cfg.backoff_max_s': 'Espera máxima tras error (s)', 'cfg.durability': 'Durabilidad',
      'cfg.retention_days': 'Días que se guardan cola y registro', 'cfg.sales_months': 'Meses de ventas en la tienda',
      'cfg.sales_months.help': 'Este mes y los anteriores; 0 = todos. Los más antiguos quedan en el servidor central.',
      'cfg.priorities': 'Prioridad por tipo de dato (0–100)', 'cfg.read': 'Documentos que puede leer',
      'cfg.write': 'Documentos que puede escribir', 'cfg.patterns.help': 'Patrones separados por comas; * = todos',
      save: 'Guardar', cancel: 'Cancelar', saved: 'Configuración de {r} guardada: se aplica en su próxima sincronización.',
      'dt.sales': 'Ventas', 'dt.stock': 'Existencias', 'dt.conflicts': 'Conflictos',
      'dt.catalog': 'Catálogo', 'dt.locations': 'Ubicaciones', 'dt.resolutions': 'Resoluciones',
      'dur.full': 'completa (full)', 'dur.normal': 'normal',
      'conflicts.title': 'Cola de conflictos', 'conflicts.none': 'No hay conflictos con estos filtros.',
      'conflicts.count': '{n} conflictos', filters: 'Filtros', status: 'Estado', all: 'Todos',
      'st.open': 'Abierto', 'st.resolved': 'Resuelto', 'st.self_healed': 'Resuelto solo',
      min_priority: 'Prioridad mínima', store: 'Tienda', all_stores: 'Todas las tiendas', all_tills: 'Todas las cajas',
      priority: 'Prioridad', invariant: 'Invariante', location: 'Ubicación', sku: 'SKU',
      observed: 'Valor observado', stores: 'Tiendas', sales: 'Ventas', opened: 'Abierto',
      updated_at: 'Actualizado', open_it: 'Abrir', open_count_live: '{n} conflictos abiertos',
      'inv.non_negative_stock': 'Existencias negativas', 'inv.unknown_product': 'Producto inexistente',
      'inv.catalog_review': 'Revisión de catálogo',
      'conflict.title': 'Conflicto {id}', back: '← Volver a la cola', message: 'Descripción',
      'conflict.sales': 'Ventas que contribuyeron', sale: 'Venta', time: 'Hora', quantity: 'Cantidad',
      'param.sale_ids': 'Ventas',
      total: 'Total', voided: 'Anulada', active: 'Vigente', select_void: 'Seleccionar {id} para anular',
      'conflict.nosales': 'Ningún registro de venta enlazado.', history: 'Historial',
      resolution: 'Resolución', by: 'Por', note: 'Nota', action: 'Acción', params: 'Parámetros',
      'ev.opened': 'abierto', 'ev.updated': 'actualizado', 'ev.self_healed': 'resuelto solo',
      'ev.resolved': 'resuelto',
      'resolve.title': 'Resolver', 'resolve.common': 'Quién resuelve y por qué',
      'resolve.closed': 'Este conflicto ya no está abierto: no admite más acciones.',
      'act.accept': 'Aceptar', 'act.accept.help': 'Reconocerlo como pedido pendiente (no cambia existencias).',
      'act.adjust': 'Ajustar', 'act.adjust.help': 'Sumar o restar unidades a las existencias de esta ubicación.',
      'act.recount': 'Recontar', 'act.recount.help': 'Fijar las existencias al valor contado.',
      'act.transfer': 'Transferir', 'act.transfer.help': 'Traer unidades desde otra ubicación.',
      'act.void': 'Anular ventas seleccionadas', 'act.void.help': 'Marque las ventas a anular en la tabla de ventas: se reponen sus unidades.',
      'act.restore': 'Restaurar producto', 'act.restore.help': 'Volver a dar de alta el producto en el catálogo.',
      'act.remap': 'Reasignar a otro SKU', 'act.remap.help': 'Las líneas de venta pasan a otro producto existente.',
      'act.keep_central': 'Mantener central', 'act.keep_local': 'Mantener local',
      'act.keep.help': 'Ediciones concurrentes descartadas: confirme el valor ganador o recupere el descartado.',
      'act.custom': 'Personalizado', 'act.custom.help': 'Cualquier acción con sus parámetros en JSON.',
      'act.send': 'Enviar', field: 'Campo', all_fields: 'Todos los campos', from_location: 'Desde la ubicación',
      count: 'Cantidad contada', target_sku: 'SKU destino', params_json: 'Parámetros (JSON)',
      discarded: 'Valores descartados', value: 'Valor', 'void.none': 'Seleccione al menos una venta.',
      'json.bad': 'Los parámetros deben ser un objeto JSON: {err}', resolved_ok: 'Conflicto {id}: {status}.',
      'err.generic': 'Error {status}: {msg}', loading: 'Cargando…',
      'no_tenant': 'Ninguna tienda se ha conectado todavía al relay.',
      'log.title': 'Registro de sincronización', 'log.none': 'No hay sesiones registradas.',
      'log.count': '{n} sesiones', started: 'Inicio', ended: 'Fin', kind: 'Tipo', error: 'Error',
      limit: 'Mostrar', 'units': 'uds.', yes: 'sí', no: 'no', 'running': 'en curso',
      'ago.s': 'hace {n} s', 'ago.m': 'hace {n} min', 'ago.h': 'hace {n} h', 'ago.d': 'hace {n} d',
      'conflicts.count.one': '1 conflicto', 'log.count.one': '1 sesión',
      'nav.nodes': 'Nodos del relay', 'nodes.title': 'Nodos del relay', 'nodes.none': 'Ningún nodo del relay está en vivo.',
      'nodes.count': '{n} nodos en vivo', 'nodes.count.one': '1 nodo en vivo', node: 'Nodo', 'node.this': 'este nodo',
      'node.reviews': 'Revisa', 'node.connections': 'Conexiones', 'node.stores': 'Cajas conectadas',
      'node.updates': 'Actualizaciones', 'node.queue': 'Cola de escritura', 'node.beat': 'Último latido',
      'node.started': 'En marcha desde', 'node.reviewer': 'revisa', 'on_nodes': 'Nodo del relay',
      'nodes.help': 'Cada proceso del relay late cada segundo en la base de datos. El nodo que revisa guarda los conflictos; los demás le pasan las operaciones sobre conflictos.',
      'srv.not_run': 'ningún nodo del relay atendió la petición en {n} s: no se hizo nada; vuelva a intentarlo',
      'srv.still_running': 'el nodo {node} del relay aún la está aplicando; vuelva a intentarlo para ver el resultado (se aplica una sola vez)',
      'srv.in_doubt': 'el nodo {node} del relay se detuvo mientras la aplicaba: no se sabe si se aplicó; revise el conflicto antes de repetirla',
      'open_count_live.one': '1 conflicto abierto',
      'msg.non_negative_stock': 'Las existencias de {sku} en {location} son {observed}.',
      'name.accept': 'Aceptar', 'name.adjust': 'Ajustar', 'name.recount': 'Recontar',
      'name.transfer': 'Transferir', 'name.void': 'Anular ventas', 'name.restore': 'Restaurar producto',
      'name.remap': 'Reasignar SKU', 'name.keep_central': 'Mantener central', 'name.keep_local': 'Mantener local',
      'st.partial': 'Compensado en parte', 'ev.compensated': 'compensado en parte (sigue abierto)',
      'stores.count': '{stores} tiendas · {n} cajas, {on} en línea', 'stores.count.one': '1 caja, {on} en línea',
      'stores.one_store': '1 tienda · {n} cajas, {on} en línea', till: 'Caja', tills: 'Cajas',
      'store.unknown': 'Tienda sin determinar', 'store.unknown.help': 'Esta caja aún no ha escrito existencias en ninguna tienda.',
      'sync_offline_reason': 'Desconectada: no se le puede pedir ahora; se sincronizará sola al volver.',
      product: 'Producto', 'product.unknown': 'No está en el catálogo', 'product.none': 'sin nombre',
      'product.did_you_mean': '¿Quería decir {sku} ({name})?', 'product.look_alike': 'solo cambian letras que se confunden (O/0, I/1, S/5)',
      'product.typo': 'Posible errata: {sku} no existe en el catálogo.',
      current: 'Valor actual', first_observed: 'Al abrirse', 'priority.words': '{dt} ({base} × 100) + gravedad {sev}',
      'priority.help': 'Cuanto mayor, antes se atiende: el tipo de dato del invariante pesa ×100 y la gravedad (unidades en juego) se suma.',
      'prio.high': 'alta', 'prio.mid': 'media', 'prio.low': 'baja',
      'timeline.title': 'Cómo se llegó a este valor', 'timeline.help': 'Cada cambio de {sku} en {location} tal como el relay lo guardó, en su orden. Las ventas llevan la hora del ticket; el resto, la hora en que el relay lo recibió.',
      'timeline.none': 'Sin movimientos guardados de este SKU en esta ubicación.', movement: 'Movimiento', change: 'Cambio', balance: 'Saldo',
      'mv.opening': 'Saldo anterior (historial compactado)', 'mv.sale': 'Venta', 'mv.in': 'Entrada (recepción o ajuste)',
      'mv.out': 'Salida (ajuste, recuento o traspaso)', 'mv.resolution': 'Resolución: {action}', 'mv.relay': 'Corrección del relay',
      'mv.follower': 'Escritura de un cliente Yjs', 'mv.remapped': 'venta reasignada desde {sku}', 'at.relay': 'recibido',
      'resolution.partial': 'Compensación parcial: el conflicto sigue abierto', 'resolved_partial': 'Compensación registrada en {id}, pero sigue abierto: {sku} está en {value}.',
      'restore.never': '{sku} nunca estuvo en el catálogo: no hay nada que restaurar. Use «Reasignar a otro SKU».',
      'sale.ref': '{till} · {time}', remapped: 'Reasignada', money_currency: 'EUR',
      'out.ok': 'correcto', 'out.rejected': 'rechazado', 'out.error': 'error', 'out.running': 'en curso',
      'kind.sync': 'sincronización', 'kind.yjs': 'cliente Yjs', 'srv.prefix': 'El relay dice: {msg}',
      'srv.bad_token': 'token incorrecto o revocado', 'srv.token_malformed': 'token mal formado (un token del relay tiene la forma ts_<12 hex>_<secreto>)',
      'srv.token_unknown': 'token {id} desconocido (no existe o su secreto no es correcto)',
      'srv.token_revoked': 'el token {id} fue revocado; pida uno nuevo al administrador del relay',
      'srv.token_admin': 'un token de administrador no sincroniza; use el token emitido para esta tienda',
      'srv.token_other': 'este token es de la tienda {owner}, no de {asked}',
      'srv.forbidden_read': 'este token no puede leer {doc}',
      'srv.read_only': 'solo lectura: este token no puede escribir {doc}', 'srv.too_many': 'demasiadas conexiones con este token (máximo {n})',
      'srv.rate': 'más de {n} mensajes por segundo', 'srv.not_doc': 'no es un documento',
      'srv.not_connected': 'la caja {r} no está conectada ahora', 'srv.closed': 'el conflicto {id} ya está {status}',
      'srv.not_applies': 'la acción {action} no se aplica a un conflicto de tipo {inv}', 'srv.no_conflict': 'no existe el conflicto {id}',
      'srv.storage': 'fallo de almacenamiento', 'srv.not_reading': 'no lee: no se le pudo enviar nada en {n} s',
      'srv.code': 'código {code}: {msg}', 'srv.internal': 'error interno', 'srv.admin_token': 'falta el token de administrador o no es válido',
      'srv.not_yours': 'el registro de la ubicación {loc} no es suyo', 'srv.quantity': '{name} debe ser un entero',
      'msg.unknown_product': 'Se vendió {sku} en {location}, pero {sku} no está en el catálogo.',
      letter: 'la letra {c} (no un dígito)'
    },
    en: {
      skip: 'Skip to content', console: 'Relay console', nav: 'Main',
      'nav.stores': 'Stores', 'nav.conflicts': 'Conflicts', 'nav.log': 'Sync log',
      tenant: 'Tenant', logout: 'Log out', footer: 'Refreshes every 2 s',
      updated: 'Updated {time}', offline_api: 'Cannot reach the relay: retrying…',
      'login.title': 'Log in', 'login.token': 'Admin token',
      'login.help': 'Create one on the relay server with:',
      'login.submit': 'Log in', 'login.bad': 'Invalid token, or not an admin token.',
      'login.expired': 'Your session ended: enter the token again.',
      'login.checking': 'Checking…',
      'stores.title': 'Stores', 'stores.none': 'No store has a token in this tenant yet.',
      online: 'Online', offline: 'Offline',
      last_sync: 'Last sync', never: 'never', outcome: 'Outcome',
      duration: 'Duration', updates_inout: 'Updates (received / sent)',
      bytes_inout: 'Bytes (received / sent)', docs: 'Documents',
      sync_now: 'Sync now', sync_now_full: 'Full sync',
      sync_requested: 'Sync requested from {r}.', sync_offline: '{r} is not connected now.',
      edit_config: 'Edit config', close_config: 'Close config',
      config: 'Config', 'cfg.relay_url': 'Relay URL', 'cfg.relay_url.help': 'ws:// or wss://; empty: the store\'s own',
      'cfg.enabled': 'Sync enabled', 'cfg.interval_s': 'Interval (s)',
      'cfg.batch_size': 'Batch size', 'cfg.backoff_min_s': 'Minimum backoff after an error (s)',
      'cfg.backoff_max_s': 'Maximum backoff after an error (s)', 'cfg.durability': 'Durability',
      'cfg.retention_days': 'Days queue and log are kept', 'cfg.sales_months': 'Months of sales kept at the store',
      'cfg.sales_months.help': 'This month and the ones before; 0 = all. Older ones stay at the relay.',
      'cfg.priorities': 'Priority per data type (0–100)', 'cfg.read': 'Documents it may read',
      'cfg.write': 'Documents it may write', 'cfg.patterns.help': 'Comma-separated patterns; * = all',
      save: 'Save', cancel: 'Cancel', saved: 'Config of {r} saved: applied at its next sync.',
      'dt.sales': 'Sales', 'dt.stock': 'Stock', 'dt.conflicts': 'Conflicts',
      'dt.catalog': 'Catalog', 'dt.locations': 'Locations', 'dt.resolutions': 'Resolutions',
      'dur.full': 'full', 'dur.normal': 'normal',
      'conflicts.title': 'Conflict queue', 'conflicts.none': 'No conflicts match these filters.',
      'conflicts.count': '{n} conflicts', filters: 'Filters', status: 'Status', all: 'All',
      'st.open': 'Open', 'st.resolved': 'Resolved', 'st.self_healed': 'Self-healed',
      min_priority: 'Minimum priority', store: 'Store', all_stores: 'All stores', all_tills: 'All tills',
      priority: 'Priority', invariant: 'Invariant', location: 'Location', sku: 'SKU',
      observed: 'Observed value', stores: 'Stores', sales: 'Sales', opened: 'Opened',
      updated_at: 'Updated', open_it: 'Open', open_count_live: '{n} open conflicts',
      'inv.non_negative_stock': 'Negative stock', 'inv.unknown_product': 'Unknown product',
      'inv.catalog_review': 'Catalog review',
      'conflict.title': 'Conflict {id}', back: '← Back to the queue', message: 'Description',
      'conflict.sales': 'Contributing sales', sale: 'Sale', time: 'Time', quantity: 'Quantity',
      'param.sale_ids': 'Sales',
      total: 'Total', voided: 'Voided', active: 'Active', select_void: 'Select {id} to void',
      'conflict.nosales': 'No sale record linked.', history: 'History',
      resolution: 'Resolution', by: 'By', note: 'Note', action: 'Action', params: 'Parameters',
      'ev.opened': 'opened', 'ev.updated': 'updated', 'ev.self_healed': 'self-healed',
      'ev.resolved': 'resolved',
      'resolve.title': 'Resolve', 'resolve.common': 'Who resolves it, and why',
      'resolve.closed': 'This conflict is no longer open: no more actions.',
      'act.accept': 'Accept', 'act.accept.help': 'Acknowledge it as a backorder (stock unchanged).',
      'act.adjust': 'Adjust', 'act.adjust.help': 'Add or remove units from this location\'s stock.',
      'act.recount': 'Recount', 'act.recount.help': 'Set the stock to the counted value.',
      'act.transfer': 'Transfer', 'act.transfer.help': 'Bring units from another location.',
      'act.void': 'Void selected sales', 'act.void.help': 'Tick the sales to void in the sales table: their units go back to stock.',
      'act.restore': 'Restore product', 'act.restore.help': 'Put the product back in the catalog.',
      'act.remap': 'Remap to another SKU', 'act.remap.help': 'The sale lines move to another existing product.',
      'act.keep_central': 'Keep central', 'act.keep_local': 'Keep local',
      'act.keep.help': 'Concurrent edits were discarded: confirm the winner or bring back the discarded value.',
      'act.custom': 'Custom', 'act.custom.help': 'Any action, with its parameters as JSON.',
      'act.send': 'Send', field: 'Field', all_fields: 'All fields', from_location: 'From location',
      count: 'Counted quantity', target_sku: 'Target SKU', params_json: 'Parameters (JSON)',
      discarded: 'Discarded values', value: 'Value', 'void.none': 'Select at least one sale.',
      'json.bad': 'Parameters must be a JSON object: {err}', resolved_ok: 'Conflict {id}: {status}.',
      'err.generic': 'Error {status}: {msg}', loading: 'Loading…',
      'no_tenant': 'No store has connected to the relay yet.',
      'log.title': 'Sync log', 'log.none': 'No sessions logged.',
      'log.count': '{n} sessions', started: 'Started', ended: 'Ended', kind: 'Kind', error: 'Error',
      limit: 'Show', 'units': 'units', yes: 'yes', no: 'no', 'running': 'running',
      'ago.s': '{n} s ago', 'ago.m': '{n} min ago', 'ago.h': '{n} h ago', 'ago.d': '{n} d ago',
      'conflicts.count.one': '1 conflict', 'log.count.one': '1 session',
      'nav.nodes': 'Relay nodes', 'nodes.title': 'Relay nodes', 'nodes.none': 'No relay node is live.',
      'nodes.count': '{n} live nodes', 'nodes.count.one': '1 live node', node: 'Node', 'node.this': 'this node',
      'node.reviews': 'Reviews', 'node.connections': 'Connections', 'node.stores': 'Tills connected',
      'node.updates': 'Updates', 'node.queue': 'Write queue', 'node.beat': 'Last heartbeat',
      'node.started': 'Running since', 'node.reviewer': 'reviews', 'on_nodes': 'Relay node',
      'nodes.help': 'Every relay process beats into the database each second. The reviewing node keeps the conflicts; the others pass it the operations on conflicts.',
      'srv.not_run': 'no relay node took the request within {n} s: nothing was done; try again',
      'srv.still_running': 'relay node {node} is still applying it; try again to see the outcome (it is applied once)',
      'srv.in_doubt': 'relay node {node} stopped while applying it: whether it was applied is unknown; check the conflict before repeating it',
      'open_count_live.one': '1 open conflict',
      'msg.non_negative_stock': 'Stock of {sku} at {location} is {observed}.',
      'name.accept': 'Accept', 'name.adjust': 'Adjust', 'name.recount': 'Recount',
      'name.transfer': 'Transfer', 'name.void': 'Void sales', 'name.restore': 'Restore product',
      'name.remap': 'Remap SKU', 'name.keep_central': 'Keep central', 'name.keep_local': 'Keep local',
      'st.partial': 'Partly compensated', 'ev.compensated': 'partly compensated (still open)',
      'stores.count': '{stores} stores · {n} tills, {on} online', 'stores.count.one': '1 till, {on} online',
      'stores.one_store': '1 store · {n} tills, {on} online', till: 'Till', tills: 'Tills',
      'store.unknown': 'Store not known yet', 'store.unknown.help': 'This till has not written stock at any store yet.',
      'sync_offline_reason': 'Offline: it cannot be asked now; it syncs by itself when it is back.',
      product: 'Product', 'product.unknown': 'Not in the catalog', 'product.none': 'no name',
      'product.did_you_mean': 'Did you mean {sku} ({name})?', 'product.look_alike': 'only look-alike characters differ (O/0, I/1, S/5)',
      'product.typo': 'Possible typo: {sku} is not in the catalog.',
      current: 'Current value', first_observed: 'When opened', 'priority.words': '{dt} ({base} × 100) + severity {sev}',
      'priority.help': 'Higher is handled first: the invariant\'s data type weighs ×100 and the severity (units at stake) is added.',
      'prio.high': 'high', 'prio.mid': 'medium', 'prio.low': 'low',
      'timeline.title': 'How it got to this value', 'timeline.help': 'Every change of {sku} at {location} as the relay stored it, in order. Sales carry the ticket\'s time; the rest, when the relay received it.',
      'timeline.none': 'No stored movement of this SKU at this location.', movement: 'Movement', change: 'Change', balance: 'Balance',
      'mv.opening': 'Earlier balance (history compacted)', 'mv.sale': 'Sale', 'mv.in': 'Entry (receipt or adjustment)',
      'mv.out': 'Exit (adjustment, stocktake or transfer)', 'mv.resolution': 'Resolution: {action}', 'mv.relay': 'Relay correction',
      'mv.follower': 'Write by a Yjs client', 'mv.remapped': 'sale remapped from {sku}', 'at.relay': 'received',
      'resolution.partial': 'Partial compensation: the conflict is still open', 'resolved_partial': 'Compensation recorded on {id}, but it is still open: {sku} is at {value}.',
      'restore.never': '{sku} was never in the catalog: there is nothing to restore. Use "Remap to another SKU".',
      'sale.ref': '{till} · {time}', remapped: 'Remapped', money_currency: 'EUR',
      'out.ok': 'ok', 'out.rejected': 'rejected', 'out.error': 'error', 'out.running': 'running',
      'kind.sync': 'sync', 'kind.yjs': 'Yjs client', 'srv.prefix': 'The relay says: {msg}',
      'srv.bad_token': 'bad or revoked token', 'srv.token_malformed': 'malformed token (a relay token looks like ts_<12 hex>_<secret>)',
      'srv.token_unknown': 'unknown token {id} (no such token, or its secret is wrong)',
      'srv.token_revoked': 'token {id} was revoked; ask the relay admin for a new one',
      'srv.token_admin': 'an admin token cannot sync; use the token issued for this store',
      'srv.token_other': 'this token belongs to store {owner}, not {asked}',
      'srv.forbidden_read': 'this token may not read {doc}',
      'srv.read_only': 'read-only: this token may not write {doc}', 'srv.too_many': 'too many connections with this token (at most {n})',
      'srv.rate': 'more than {n} messages per second', 'srv.not_doc': 'not a document',
      'srv.not_connected': 'till {r} is not connected now', 'srv.closed': 'conflict {id} is already {status}',
      'srv.not_applies': 'action {action} does not apply to a {inv} conflict', 'srv.no_conflict': 'no conflict {id}',
      'srv.storage': 'storage failure', 'srv.not_reading': 'not reading: nothing could be sent for {n} s',
      'srv.code': 'code {code}: {msg}', 'srv.internal': 'internal error', 'srv.admin_token': 'missing or invalid admin token',
      'srv.not_yours': 'the record of location {loc} is not yours', 'srv.quantity': '{name} must be an integer',
      'msg.unknown_product': '{sku} was sold at {location}, but {sku} is not in the catalog.',
      letter: 'the letter {c} (not a digit)'
    }
  };

  function storedLang() {
    try {
      var v = window.localStorage.getItem(LANG_KEY);
      return v === 'en' || v === 'es' ? v : 'es';
    } catch (e) { return 'es'; }
  }

  var S = {
    lang: storedLang(),
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    tenant: sessionStorage.getItem(TENANT_KEY) || '',
    tenants: [],
    replicas: [],
    page: null,
    inflight: false,
    model: null,
    modelLoad: null,
    lastOpen: null,
    apiDown: false
  };

  function t(key, vars) {
    var table = I18N[S.lang] || I18N.es;
    var s = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : (I18N.es[key] || key);
    if (vars) {
      Object.keys(vars).forEach(function (k) { s = s.split('{' + k + '}').join(String(vars[k])); });
    }
    return s;
  }

  /** t() with a singular form (key + '.one') when n is 1. */
  function tn(key, n, vars) {
    var v = vars || {};
    v.n = n;
    return n === 1 && Object.prototype.hasOwnProperty.call(I18N.es, key + '.one') ? t(key + '.one', v) : t(key, v);
  }

  function applyStaticI18n() {
    document.documentElement.lang = S.lang;
    document.querySelectorAll('[data-i18n]').forEach(function (el) {
      el.textContent = t(el.getAttribute('data-i18n'));
    });
    document.querySelectorAll('[data-i18n-aria]').forEach(function (el) {
      el.setAttribute('aria-label', t(el.getAttribute('data-i18n-aria')));
    });
    document.querySelectorAll('.lang-switch button').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b.getAttribute('data-lang') === S.lang));
    });
    document.title = 'tiendasync · ' + t('console');
  }

  /* ------------------------------------------------------------------ DOM helpers */

  function h(tag, attrs) {
    var el = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      var v = a[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'class') el.className = v;
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else if (k === 'checked') el.checked = !!v;
      else el.setAttribute(k, v === true ? '' : String(v));
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(typeof child === 'string' || typeof child === 'number'
      ? document.createTextNode(String(child)) : child);
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  var uid = 0;
  function nextId(prefix) { uid += 1; return prefix + '-' + uid; }

  /** Replace el's content with build() only when data changed; keep focus by data-key. */
  function patch(el, data, build) {
    var json = JSON.stringify([S.lang, data]);
    if (el.__json === json) return false;
    el.__json = json;
    var active = document.activeElement;
    var focusKey = active && el.contains(active) ? active.getAttribute('data-key') : null;
    clear(el);
    append(el, build());
    if (focusKey) {
      var again = el.querySelector('[data-key="' + cssEscape(focusKey) + '"]');
      if (again) again.focus();
    }
    return true;
  }

  function cssEscape(s) {
    return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, '\\$&');
  }

  function announce(msg) {
    var live = document.getElementById('live');
    live.textContent = '';
    window.setTimeout(function () { live.textContent = msg; }, 50);
  }

  function notice(msg, kind) {
    var el = document.getElementById('notice');
    if (!msg) { el.hidden = true; el.textContent = ''; return; }
    el.hidden = false;
    el.className = 'notice notice-' + (kind || 'error');
    el.textContent = msg;
  }

  /* ------------------------------------------------------------------ formatting */

  function locale() { return S.lang === 'en' ? 'en-GB' : 'es-ES'; }

  function fmtTime(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    var d = new Date(seconds * 1000);
    return d.toLocaleString(locale(), { year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return t('never');
    var s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
    if (s < 90) return t('ago.s', { n: s });
    if (s < 5400) return t('ago.m', { n: Math.round(s / 60) });
    if (s < 172800) return t('ago.h', { n: Math.round(s / 3600) });
    return t('ago.d', { n: Math.round(s / 86400) });
  }

  function fmtNum(n) {
    return n === null || n === undefined ? '—' : Number(n).toLocaleString(locale());
  }

  function fmtMoney(cents) {
    if (cents === null || cents === undefined) return '—';
    return (cents / 100).toLocaleString(locale(), { style: 'currency', currency: t('money_currency') });
  }

  function fmtSigned(n) { return (n > 0 ? '+' : n < 0 ? '−' : '') + fmtNum(Math.abs(n)); }

  /** A sale as people name it: its till and ticket time (the id stays in the tooltip). */
  function saleRef(s) {
    var time = s.at_ms ? new Date(s.at_ms).toLocaleString(locale(), { day: '2-digit', month: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '—';
    return t('sale.ref', { till: s.replica || '?', time: time });
  }

  function outcomeText(o) { return hasText('out.' + o) ? t('out.' + o) : o; }
  function kindText(k) { return hasText('kind.' + k) ? t('kind.' + k) : k; }

  /* The relay's messages are English: the known ones are said in the chosen language, the
   * rest are shown as the relay wrote them, marked as such. */
  var SERVER_TEXTS = [
    [/^(?:(\d{4}): )?(.*)$/, null],
    [/^bad or revoked token$/, function () { return t('srv.bad_token'); }],
    [/^malformed token/, function () { return t('srv.token_malformed'); }],
    [/^unknown token (\S+)/, function (m) { return t('srv.token_unknown', { id: m[1] }); }],
    [/^token (\S+) was revoked/, function (m) { return t('srv.token_revoked', { id: m[1] }); }],
    [/^an admin token cannot sync/, function () { return t('srv.token_admin'); }],
    [/^this token belongs to store (\S+), not (\S+)$/, function (m) { return t('srv.token_other', { owner: m[1], asked: m[2] }); }],
    [/^this token may not read (.+)$/, function (m) { return t('srv.forbidden_read', { doc: m[1] }); }],
    [/^read-only: this token may not write (\S+)/, function (m) { return t('srv.read_only', { doc: m[1] }); }],
    [/^too many connections with this token(?: \(at most (\d+) at once\))?$/, function (m) { return t('srv.too_many', { n: m[1] || '?' }); }],
    [/^more than ([\d.]+) messages per second$/, function (m) { return t('srv.rate', { n: m[1] }); }],
    [/^not a document/, function () { return t('srv.not_doc'); }],
    [/^replica '(.+)' is not connected now$/, function (m) { return t('srv.not_connected', { r: m[1] }); }],
    [/^conflict (\S+) is already (\w+)$/, function (m) { return t('srv.closed', { id: m[1], status: t('st.' + m[2]).toLowerCase() }); }],
    [/^action '(\w+)' does not apply to a (\w+) conflict$/, function (m) { return t('srv.not_applies', { action: actLabel(m[1]), inv: invName(m[2]) }); }],
    [/^no conflict '?([^']+)'?$/, function (m) { return t('srv.no_conflict', { id: m[1] }); }],
    [/^storage failure/, function () { return t('srv.storage'); }],
    [/^not reading: nothing could be sent for (\d+) s/, function (m) { return t('srv.not_reading', { n: m[1] }); }],
    [/^internal error/, function () { return t('srv.internal'); }],
    [/^missing or invalid admin token$/, function () { return t('srv.admin_token'); }],
    [/^the record of location '(.+)' is not yours to write$/, function (m) { return t('srv.not_yours', { loc: m[1] }); }],
    [/^(\w+) must be an integer/, function (m) { return t('srv.quantity', { name: m[1] }); }],
    [/^no relay node ran the request within ([\d.]+) s/, function (m) { return t('srv.not_run', { n: m[1] }); }],
    [/^relay node (\S+) is still running the request/, function (m) { return t('srv.still_running', { node: m[1] }); }],
    [/^relay node (\S+) stopped while running this request/, function (m) { return t('srv.in_doubt', { node: m[1] }); }]
  ];

  function srvText(msg) {
    if (!msg) return '';
    var whole = SERVER_TEXTS[0][0].exec(String(msg));
    var code = whole[1];
    var text = whole[2];
    for (var i = 1; i < SERVER_TEXTS.length; i++) {
      var m = SERVER_TEXTS[i][0].exec(text);
      if (m) {
        var said = SERVER_TEXTS[i][1](m);
        return code ? t('srv.code', { code: code, msg: said }) : said;
      }
    }
    return S.lang === 'en' ? String(msg) : t('srv.prefix', { msg: String(msg) });
  }

  /** The state a person means: open, partly compensated (a resolution left it open), closed. */
  function stateOf(c) {
    if (c.state) return c.state;
    return c.status === 'open' && c.resolution ? 'partial' : c.status;
  }

  var INV_DATA_TYPE = { non_negative_stock: 'stock', unknown_product: 'sales', catalog_review: 'catalog' };

  /** A priority in words: its data type's weight and the severity added to it. */
  function priorityWords(c) {
    var base = Math.floor(c.priority / 100);
    var sev = c.priority % 100;
    var dt = INV_DATA_TYPE[c.invariant];
    return t('priority.words', { dt: dt ? dtName(dt) : '?', base: base, sev: sev });
  }

  function productLabel(c) {
    if (c.product_known === false) return null;
    return c.product_name || (c.product && c.product.name) || null;
  }

  /** A SKU in which letters that pass for digits (O, I, l) are marked, so CAFE-5OO and
   * CAFE-500 do not look the same. */
  function skuCode(sku) {
    var code = h('code', { class: 'sku', 'data-sku': sku });
    String(sku).split(/([OoIl])/).forEach(function (part, i) {
      if (!part) return;
      if (i % 2) code.appendChild(h('span', { class: 'lookalike', title: t('letter', { c: part }), text: part }));
      else code.appendChild(document.createTextNode(part));
    });
    return code;
  }

  /** The SKU with its product's name, or flagged when the catalog does not have it. */
  function productCell(c) {
    var name = productLabel(c);
    var known = c.product_known !== false && !(c.product === null && c.timeline !== undefined);
    return h('span', { class: 'product' },
      name ? h('span', { class: 'product-name', text: name }) : null, name ? ' ' : null,
      skuCode(c.sku),
      known ? null : [' ', h('span', { class: 'badge badge-unknown', text: t('product.unknown') })]);
  }

  function fmtDuration(a, b) {
    if (!a || !b) return '—';
    var s = b - a;
    return s < 10 ? s.toFixed(2) + ' s' : Math.round(s) + ' s';
  }

  function statusBadge(status) {
    return h('span', { class: 'badge badge-' + status, text: t('st.' + status) });
  }

  function hasText(key) { return Object.prototype.hasOwnProperty.call(I18N.es, key); }

  /** A data type's label (its name when this file has none). */
  function dtName(name) { return hasText('dt.' + name) ? t('dt.' + name) : name; }

  /** The names of the model's data types, in table order. */
  function dataTypes() {
    return S.model ? S.model.dataTypes.map(function (d) { return d.name; }) : [];
  }

  /** An action's button label (its name when this file has none). */
  function actLabel(name) { return hasText('act.' + name) ? t('act.' + name) : name; }

  function actionName(action) {
    var key = 'name.' + action;
    return Object.prototype.hasOwnProperty.call(I18N.es, key) ? t(key) + ' (' + action + ')' : action;
  }

  /** The backend's message is English; say the well-known ones in the chosen language. */
  function conflictMessage(c, current) {
    var now = current !== undefined && current !== null ? current : c.observed;
    if (c.invariant === 'non_negative_stock' && now !== undefined && now !== null) {
      return t('msg.non_negative_stock', { sku: c.sku, location: c.location, observed: fmtNum(now) });
    }
    if (c.invariant === 'unknown_product') return t('msg.unknown_product', { sku: c.sku, location: c.location });
    return srvText(c.message);
  }

  function invName(inv) {
    var key = 'inv.' + inv;
    return Object.prototype.hasOwnProperty.call(I18N.es, key) ? t(key) : inv;
  }

  /* ------------------------------------------------------------------ API */

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function apiUrl(path, query) {
    var params = new URLSearchParams();
    Object.keys(query || {}).forEach(function (k) {
      var v = query[k];
      if (v !== null && v !== undefined && v !== '') params.set(k, v);
    });
    if (S.tenant && !params.has('tenant')) params.set('tenant', S.tenant);
    var qs = params.toString();
    return path + (qs ? '?' + qs : '');
  }

  function api(method, path, opts) {
    var o = opts || {};
    var headers = { Accept: 'application/json' };
    if (S.token) headers.Authorization = 'Bearer ' + S.token;
    if (o.key) headers['Idempotency-Key'] = o.key;
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'omit' };
    if (o.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(o.body);
    }
    return fetch(apiUrl(path, o.query), init).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (res.status === 401 && !o.login) {
          logout(t('login.expired'));
          throw new ApiError(401, 'unauthorized');
        }
        if (!res.ok) {
          throw new ApiError(res.status, (data && data.error) || res.statusText || 'error');
        }
        return data;
      });
    }, function (err) {
      throw new ApiError(0, String(err && err.message ? err.message : err));
    });
  }

  /** A fresh idempotency key (the relay runs a request once per key). */
  function newKey() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return 'console-' + Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join('');
  }

  function errText(err) {
    if (err instanceof ApiError) {
      if (err.status === 0) return t('offline_api');
      return t('err.generic', { status: err.status, msg: srvText(err.message) });
    }
    return String(err);
  }

  function noTenantError(err) {
    return err instanceof ApiError && err.status === 400 && /no tenant/.test(err.message);
  }

  /* ------------------------------------------------------------------ shell */

  function setShell(loggedIn) {
    document.getElementById('mainnav').hidden = !loggedIn;
    document.getElementById('logout').hidden = !loggedIn;
    if (!loggedIn) document.getElementById('tenant-picker').hidden = true;
  }

  function markNav(route) {
    document.querySelectorAll('#mainnav a').forEach(function (a) {
      var r = a.getAttribute('data-route');
      var current = r === route || (r === 'conflicts' && route === 'conflict');
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
  }

  function logout(message) {
    S.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    S.lastOpen = null;
    S.model = null;
    S.modelLoad = null;
    setShell(false);
    S.loginMessage = message || '';
    if (location.hash !== '#/login') location.hash = '#/login';
    else route();
  }

  function refreshTenants() {
    return api('GET', '/api/sync/tenants/', { query: { tenant: null } }).then(function (data) {
      S.tenants = (data && data.results) || [];
      if (S.tenants.length && S.tenants.indexOf(S.tenant) < 0) {
        S.tenant = S.tenants[0];
        sessionStorage.setItem(TENANT_KEY, S.tenant);
      }
      var picker = document.getElementById('tenant-picker');
      var sel = document.getElementById('tenant-select');
      picker.hidden = S.tenants.length < 2;
      patch(sel, [S.tenants, S.tenant], function () {
        return S.tenants.map(function (name) {
          return h('option', { value: name, text: name, selected: name === S.tenant });
        });
      });
      sel.value = S.tenant;
    }, function (err) {
      if (err instanceof ApiError && err.status === 404) return; /* console without helper routes */
      throw err;
    });
  }

  /** The model tables (data types, resolution actions): fetched once after login. */
  function loadModel() {
    if (S.model) return Promise.resolve(S.model);
    if (!S.modelLoad) {
      var load = api('GET', '/api/sync/model/', { query: { tenant: null } }).then(function (data) {
        if (S.modelLoad !== load) return S.model; /* logged out meanwhile */
        S.model = { dataTypes: data.data_types || [], actions: data.actions || [] };
        return S.model;
      }, function (err) {
        if (S.modelLoad === load) S.modelLoad = null; /* try again at the next refresh */
        throw err;
      });
      S.modelLoad = load;
    }
    return S.modelLoad;
  }

  function refreshOpenCount() {
    return api('GET', '/api/sync/queue/', { query: { conflict: 'true', status: 'open', limit: 1000 } })
      .then(function (data) {
        var n = data.count;
        var badge = document.getElementById('open-count');
        badge.hidden = n === 0;
        badge.textContent = String(n);
        badge.setAttribute('aria-label', tn('open_count_live', n));
        if (S.lastOpen !== null && S.lastOpen !== n) announce(tn('open_count_live', n));
        S.lastOpen = n;
      }, function (err) { if (!noTenantError(err)) throw err; });
  }

  function refreshReplicas() {
    return api('GET', '/api/sync/replicas/').then(function (data) {
      S.replicas = data.results || [];
      return S.replicas;
    }, function (err) {
      if (noTenantError(err)) { S.replicas = []; return S.replicas; }
      throw err;
    });
  }

  function tick() {
    if (!S.token || !S.page || !S.page.refresh || S.inflight || document.hidden) return;
    S.inflight = true;
    var page = S.page;
    refreshTenants()
      .then(loadModel)
      .then(function () { return Promise.all([refreshOpenCount(), page.refresh()]); })
      .then(function () {
        if (S.page !== page) return; /* the admin moved on while it ran: its page is gone */
        S.apiDown = false;
        notice('');
        document.getElementById('refresh-state').textContent =
          t('updated', { time: new Date().toLocaleTimeString(locale()) });
      }, function (err) {
        if (S.page !== page) return; /* a refresh of a page that was left fails on its gone DOM */
        if (err instanceof ApiError && err.status === 401) return;
        if (err instanceof ApiError && err.status === 0) { S.apiDown = true; notice(t('offline_api'), 'warn'); }
        else notice(errText(err));
      })
      .then(function () { S.inflight = false; });
  }

  /* ------------------------------------------------------------------ pages */

  function pageHeader(title, extra) {
    return h('div', { class: 'page-head' },
      h('h1', { id: 'page-title', tabindex: '-1', text: title }), extra || null);
  }

  function emptyState(text) { return h('p', { class: 'empty', text: text }); }

  /* --- login */

  function loginPage(main) {
    setShell(false);
    var inputId = nextId('token');
    var err = h('p', { class: 'form-error', id: 'login-error', role: 'alert' });
    if (S.loginMessage) err.textContent = S.loginMessage;
    var input = h('input', { id: inputId, name: 'token', type: 'password', autocomplete: 'off',
      spellcheck: 'false', required: true, 'aria-describedby': 'login-help login-error' });
    var submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'login-submit', text: t('login.submit') });
    var form = h('form', { class: 'card login-card', id: 'login-form', novalidate: true,
      onsubmit: function (ev) {
        ev.preventDefault();
        var token = input.value.trim();
        if (!token) { err.textContent = t('login.bad'); input.focus(); return; }
        submit.disabled = true;
        err.textContent = t('login.checking');
        S.token = token;
        api('GET', '/api/sync/tenants/', { login: true, query: { tenant: null } }).then(function () {
          sessionStorage.setItem(TOKEN_KEY, token);
          S.loginMessage = '';
          location.hash = '#/conflicts';
        }, function (e) {
          if (e instanceof ApiError && e.status === 404) {
            /* helper routes absent: check the token against the core API instead */
            return api('GET', '/api/sync/config/', { login: true }).then(function () {
              sessionStorage.setItem(TOKEN_KEY, token);
              location.hash = '#/conflicts';
            });
          }
          throw e;
        }).catch(function (e) {
          S.token = '';
          submit.disabled = false;
          err.textContent = e instanceof ApiError && e.status === 401 ? t('login.bad') : errText(e);
          input.focus();
        });
      } },
      h('h1', { id: 'page-title', tabindex: '-1', text: t('login.title') }),
      h('label', { for: inputId, text: t('login.token') }),
      input,
      h('p', { class: 'help', id: 'login-help' }, t('login.help') + ' ',
        h('code', { text: 'tiendasync relay token add --db relay.db --admin' })),
      err,
      h('div', { class: 'actions' }, submit));
    main.appendChild(h('section', { class: 'login-wrap' }, form));
    return { focus: input };
  }

  /* --- stores */

  function storesPage(main) {
    var summary = h('p', { class: 'summary', id: 'stores-summary' });
    var list = h('div', { class: 'store-grid', id: 'store-list' });
    main.appendChild(pageHeader(t('stores.title'), summary));
    main.appendChild(list);
    var cards = {};

    function card(replica) {
      var id = replica.replica;
      var live = h('div', { class: 'store-live' });
      var msg = h('p', { class: 'inline-msg', role: 'status' });
      var formBox = h('div', { class: 'store-form', id: nextId('cfg'), hidden: true });
      var editBtn = h('button', { type: 'button', class: 'btn', 'aria-expanded': 'false',
        'aria-controls': formBox.id, 'data-action': 'edit-config', text: t('edit_config') });
      var syncBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-action': 'sync-now',
        'aria-describedby': 'why-' + id, text: t('sync_now') });
      var why = h('p', { class: 'why-not', id: 'why-' + id, hidden: true });
      var where = h('p', { class: 'store-where' });
      var el = h('article', { class: 'card store-card', 'data-replica': id, 'aria-labelledby': 'store-' + id },
        h('header', { class: 'store-head' },
          h('h2', { id: 'store-' + id }, h('span', { class: 'kind', text: t('till') + ' ' }), id),
          h('span', { class: 'store-state' })),
        where,
        live,
        h('div', { class: 'actions' }, syncBtn, editBtn),
        why,
        msg,
        formBox);
      var c = { el: el, live: live, msg: msg, formBox: formBox, editBtn: editBtn, syncBtn: syncBtn, why: why,
        where: where, data: replica };

      syncBtn.addEventListener('click', function () {
        syncBtn.disabled = true;
        api('POST', '/api/sync/config/' + encodeURIComponent(id) + '/sync_now/', { body: {} }).then(function () {
          msg.className = 'inline-msg ok';
          msg.textContent = t('sync_requested', { r: id });
          announce(msg.textContent);
        }, function (e) {
          msg.className = 'inline-msg bad';
          msg.textContent = e.status === 409 ? t('sync_offline', { r: id }) : errText(e);
        }).then(function () { syncBtn.disabled = !c.data.online; });
      });
      editBtn.addEventListener('click', function () {
        var open = formBox.hidden;
        formBox.hidden = !open;
        editBtn.setAttribute('aria-expanded', String(open));
        editBtn.textContent = open ? t('close_config') : t('edit_config');
        if (open) {
          clear(formBox);
          formBox.appendChild(configForm(c));
          var first = formBox.querySelector('input, select');
          if (first) first.focus();
        }
      });
      return c;
    }

    function configForm(c) {
      var cfg = c.data.config || {};
      var rid = c.data.replica;
      var fields = {};
      var err = h('p', { class: 'form-error', role: 'alert' });
      function field(name, input, help) {
        var id = nextId('f-' + name);
        input.id = id;
        input.name = name;
        fields[name] = input;
        var helpEl = null;
        if (help) {
          helpEl = h('span', { class: 'help', id: id + '-help', text: help });
          input.setAttribute('aria-describedby', id + '-help');
        }
        return h('div', { class: 'field' }, h('label', { for: id, text: t('cfg.' + name) }), input, helpEl);
      }
      var enabled = h('input', { type: 'checkbox', checked: cfg.enabled !== false });
      var enabledId = nextId('f-enabled');
      enabled.id = enabledId;
      var dur = h('select', {},
        ['full', 'normal'].map(function (d) {
          return h('option', { value: d, text: t('dur.' + d), selected: cfg.durability === d });
        }));
      var prios = dataTypes().map(function (dt) {
        var id = nextId('p-' + dt);
        var inp = h('input', { id: id, type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric',
          value: String((cfg.priorities || {})[dt] !== undefined ? cfg.priorities[dt] : ''), 'data-type': dt });
        return h('div', { class: 'field field-small' }, h('label', { for: id, text: dtName(dt) }), inp);
      });
      var form = h('form', { class: 'config-form', novalidate: true, onsubmit: function (ev) {
        ev.preventDefault();
        var body;
        try {
          body = {
            relay_url: fields.relay_url.value.trim() || null,
            enabled: enabled.checked,
            interval_s: num(fields.interval_s.value, 'interval_s'),
            batch_size: num(fields.batch_size.value, 'batch_size'),
            backoff_min_s: num(fields.backoff_min_s.value, 'backoff_min_s'),
            backoff_max_s: num(fields.backoff_max_s.value, 'backoff_max_s'),
            durability: dur.value,
            retention_days: num(fields.retention_days.value, 'retention_days'),
            sales_months: num(fields.sales_months.value, 'sales_months'),
            priorities: {},
            read: patterns(fields.read.value),
            write: patterns(fields.write.value)
          };
          form.querySelectorAll('input[data-type]').forEach(function (inp) {
            if (inp.value !== '') body.priorities[inp.getAttribute('data-type')] = num(inp.value, inp.getAttribute('data-type'));
          });
        } catch (e) { err.textContent = String(e.message || e); return; }
        // Send only what the admin changed: a key sent is set centrally and wins over
        // the store's own value, so saving one field must not pin all the others.
        function canon(v) {
          if (v && typeof v === 'object' && !Array.isArray(v)) {
            return JSON.stringify(Object.keys(v).sort().map(function (k) { return [k, v[k]]; }));
          }
          return JSON.stringify(v === undefined ? null : v);
        }
        Object.keys(body).forEach(function (k) {
          if (canon(body[k]) === canon(cfg[k])) delete body[k];
        });
        err.textContent = '';
        var save = form.querySelector('button[type=submit]');
        save.disabled = true;
        api('PUT', '/api/sync/config/' + encodeURIComponent(rid), { body: body }).then(function (res) {
          c.data.config = res.config;
          c.formBox.hidden = true;
          c.editBtn.setAttribute('aria-expanded', 'false');
          c.editBtn.textContent = t('edit_config');
          c.msg.className = 'inline-msg ok';
          c.msg.textContent = t('saved', { r: rid });
          announce(c.msg.textContent);
          c.editBtn.focus();
        }, function (e) {
          err.textContent = errText(e);
          save.disabled = false;
        });
      } },
      h('fieldset', {},
        h('legend', { text: t('config') + ' · ' + rid }),
        field('relay_url', h('input', { type: 'url', value: cfg.relay_url || '', placeholder: 'ws://…',
          autocomplete: 'off' }), t('cfg.relay_url.help')),
        h('div', { class: 'field field-check' }, enabled, h('label', { for: enabledId, text: t('cfg.enabled') })),
        h('div', { class: 'field-row' },
          field('interval_s', h('input', { type: 'number', min: '0.1', step: 'any', inputmode: 'decimal',
            value: String(cfg.interval_s) })),
          field('batch_size', h('input', { type: 'number', min: '1', max: '100000', step: '1',
            inputmode: 'numeric', value: String(cfg.batch_size) }))),
        h('div', { class: 'field-row' },
          field('backoff_min_s', h('input', { type: 'number', min: '0', step: 'any', inputmode: 'decimal',
            value: String(cfg.backoff_min_s) })),
          field('backoff_max_s', h('input', { type: 'number', min: '0', step: 'any', inputmode: 'decimal',
            value: String(cfg.backoff_max_s) }))),
        field('durability', dur),
        h('div', { class: 'field-row' },
          field('retention_days', h('input', { type: 'number', min: '1', max: '36500', step: 'any',
            inputmode: 'decimal', value: String(cfg.retention_days) })),
          field('sales_months', h('input', { type: 'number', min: '0', max: '1200', step: '1',
            inputmode: 'numeric', value: String(cfg.sales_months) }), t('cfg.sales_months.help'))),
        h('fieldset', { class: 'sub' }, h('legend', { text: t('cfg.priorities') }),
          h('div', { class: 'field-row field-row-5' }, prios)),
        field('read', h('input', { type: 'text', value: (cfg.read || ['*']).join(', '), autocomplete: 'off' }),
          t('cfg.patterns.help')),
        field('write', h('input', { type: 'text', value: (cfg.write || ['*']).join(', '), autocomplete: 'off' }),
          t('cfg.patterns.help'))),
      err,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'btn btn-primary', text: t('save') }),
        h('button', { type: 'button', class: 'btn btn-quiet', text: t('cancel'), onclick: function () {
          c.formBox.hidden = true;
          c.editBtn.setAttribute('aria-expanded', 'false');
          c.editBtn.textContent = t('edit_config');
          c.editBtn.focus();
        } })));
      return form;
    }

    function num(v, name) {
      var n = Number(v);
      if (v === '' || !isFinite(n)) throw new Error(t('cfg.' + name) + ': ?');
      return n;
    }

    function patterns(v) {
      return v.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
    }

    function liveView(r) {
      var s = r.last_session;
      var cfg = r.config || {};
      var prio = dataTypes().map(function (dt) { return dtName(dt) + ' ' + ((cfg.priorities || {})[dt]); }).join(' · ');
      return h('dl', { class: 'facts' },
        h('div', {}, h('dt', { text: t('last_sync') }),
          h('dd', {}, s ? h('time', { datetime: new Date((s.ended_at || s.started_at) * 1000).toISOString(),
            title: fmtTime(s.ended_at || s.started_at), text: ago(s.ended_at || s.started_at) }) : t('never'))),
        s ? h('div', {}, h('dt', { text: t('outcome') }),
          h('dd', {}, h('span', { class: 'outcome outcome-' + (s.ended_at ? s.outcome : 'running'),
            text: s.ended_at ? outcomeText(s.outcome) : t('running') }), s.error ? ' — ' + srvText(s.error) : '')) : null,
        s ? h('div', {}, h('dt', { text: t('updates_inout') }),
          h('dd', { text: fmtNum(s.updates_received) + ' / ' + fmtNum(s.updates_sent) })) : null,
        r.nodes && r.nodes.length ? h('div', {}, h('dt', { text: t('on_nodes') }),
          h('dd', { class: 'ident', 'data-nodes': r.nodes.join(' '), text: r.nodes.join(', ') })) : null,
        h('div', {}, h('dt', { text: t('config') }),
          h('dd', { text: (cfg.enabled === false ? '⏸ ' : '') + t('cfg.interval_s') + ' ' + cfg.interval_s +
            ' · ' + t('cfg.durability') + ' ' + t('dur.' + cfg.durability) })),
        h('div', {}, h('dt', { text: t('priority') }), h('dd', { class: 'small', text: prio })));
    }

    function refresh() {
      return refreshReplicas().then(function (replicas) {
        var on = replicas.filter(function (r) { return r.online; }).length;
        var stores = {};
        replicas.forEach(function (r) { if (r.location) stores[r.location] = true; });
        var nStores = Object.keys(stores).length;
        summary.textContent = S.tenants.length === 0 && replicas.length === 0 ? t('no_tenant')
          : nStores === 1 && replicas.length !== 1 ? t('stores.one_store', { n: replicas.length, on: on })
            : replicas.length === 1 ? tn('stores.count', 1, { on: on })
              : t('stores.count', { stores: nStores, n: replicas.length, on: on });
        /* tills of one store side by side, the stores in name order */
        replicas = replicas.slice().sort(function (a, b) {
          return (a.location || '~').localeCompare(b.location || '~') || a.replica.localeCompare(b.replica);
        });
        if (!replicas.length && !list.querySelector('.empty')) {
          clear(list);
          list.appendChild(emptyState(S.tenants.length ? t('stores.none') : t('no_tenant')));
        }
        var empty = list.querySelector('.empty');
        if (replicas.length && empty) empty.remove();
        var names = replicas.map(function (r) { return r.replica; });
        Object.keys(cards).forEach(function (name) {
          if (names.indexOf(name) < 0) { cards[name].el.remove(); delete cards[name]; }
        });
        replicas.forEach(function (r, i) {
          var c = cards[r.replica];
          if (!c) { c = cards[r.replica] = card(r); }
          c.data = r;
          if (list.children[i] !== c.el) list.insertBefore(c.el, list.children[i] || null);
          var state = c.el.querySelector('.store-state');
          patch(state, [r.online], function () {
            return h('span', { class: 'badge ' + (r.online ? 'badge-online' : 'badge-offline') },
              h('span', { class: 'dot', 'aria-hidden': 'true' }), r.online ? t('online') : t('offline'));
          });
          patch(c.live, [r, Math.floor(Date.now() / 5000)], function () { return liveView(r); });
          c.syncBtn.disabled = !r.online;
          c.why.hidden = r.online;
          c.why.textContent = r.online ? '' : t('sync_offline_reason');
          patch(c.where, [r.location], function () {
            return r.location ? [h('span', { class: 'kind', text: t('store') + ' ' }), h('strong', { text: r.location })]
              : h('span', { class: 'help', title: t('store.unknown.help'), text: t('store.unknown') });
          });
        });
      });
    }
    return { refresh: refresh };
  }

  /* --- conflict queue */

  var queueFilters = { status: 'open', replica: '', minPriority: '' };

  function conflictsPage(main) {
    var summary = h('p', { class: 'summary', id: 'conflicts-summary' });
    var prioHelp = h('p', { class: 'help', id: 'priority-help', text: t('priority.help') });
    var sid = nextId('f-status');
    var rid = nextId('f-store');
    var pid = nextId('f-prio');
    var statusSel = h('select', { id: sid, name: 'status' },
      [['open', t('st.open')], ['resolved', t('st.resolved')], ['self_healed', t('st.self_healed')], ['', t('all')]]
        .map(function (o) { return h('option', { value: o[0], text: o[1], selected: queueFilters.status === o[0] }); }));
    var storeSel = h('select', { id: rid, name: 'replica' });
    var prio = h('input', { id: pid, name: 'min_priority', type: 'number', min: '0', step: '1',
      inputmode: 'numeric', value: queueFilters.minPriority });
    function onFilter() {
      queueFilters.status = statusSel.value;
      queueFilters.replica = storeSel.value;
      queueFilters.minPriority = prio.value;
      refresh().catch(function (e) { notice(errText(e)); });
    }
    statusSel.addEventListener('change', onFilter);
    storeSel.addEventListener('change', onFilter);
    prio.addEventListener('input', onFilter);
    var filters = h('form', { class: 'filters card', role: 'search', 'aria-label': t('filters'),
      onsubmit: function (ev) { ev.preventDefault(); onFilter(); } },
      h('div', { class: 'field' }, h('label', { for: sid, text: t('status') }), statusSel),
      h('div', { class: 'field' }, h('label', { for: pid, text: t('min_priority') }), prio),
      h('div', { class: 'field' }, h('label', { for: rid, text: t('till') }), storeSel));
    var table = h('div', { class: 'table-wrap', id: 'conflict-table' });
    main.appendChild(pageHeader(t('conflicts.title'), summary));
    main.appendChild(filters);
    main.appendChild(prioHelp);
    main.appendChild(table);

    function rows(items) {
      if (!items.length) return emptyState(t('conflicts.none'));
      return h('table', { class: 'data conflicts' },
        h('caption', { class: 'sr-only', text: t('conflicts.title') }),
        h('thead', {}, h('tr', {},
          [t('priority'), t('status'), t('invariant'), t('location'), t('product'), t('current'), t('tills'),
            t('sales'), t('opened'), '']
            .map(function (c) { return h('th', { scope: 'col', text: c }); }))),
        h('tbody', {}, items.map(function (c) {
          var href = '#/conflict/' + encodeURIComponent(c.id);
          var state = stateOf(c);
          return h('tr', { 'data-conflict': c.id, 'data-state': state, class: 'status-' + c.status },
            h('td', { 'data-label': t('priority') }, h('span', { class: 'prio', text: c.priority }),
              h('span', { class: 'prio-words', text: priorityWords(c) })),
            h('td', { 'data-label': t('status') }, statusBadge(state)),
            h('td', { 'data-label': t('invariant'), text: invName(c.invariant) }),
            h('td', { 'data-label': t('location'), text: c.location === '-' ? '—' : c.location }),
            h('td', { 'data-label': t('product') }, productCell(c)),
            h('td', { 'data-label': t('current'), class: 'num ' + (c.observed < 0 ? 'neg' : ''),
              text: c.observed === null ? '—' : fmtNum(c.observed) }),
            h('td', { 'data-label': t('tills'), text: (c.replicas || []).join(', ') || '—' }),
            h('td', { 'data-label': t('sales'), class: 'num', text: (c.sales || []).length }),
            h('td', { 'data-label': t('opened') }, h('time', { title: fmtTime(c.opened_at), text: ago(c.opened_at) })),
            h('td', { class: 'row-action' }, h('a', { class: 'btn btn-small', href: href, 'data-key': c.id,
              'aria-label': t('open_it') + ' ' + c.id + ' (' + c.sku + ')', text: t('open_it') + ' →' })));
        })));
    }

    function refresh() {
      return Promise.all([
        api('GET', '/api/sync/queue/', { query: { conflict: 'true', status: queueFilters.status,
          replica: queueFilters.replica, limit: 1000 } }),
        refreshReplicas()
      ]).then(function (res) {
        var items = res[0].results.slice();
        var min = queueFilters.minPriority === '' ? null : Number(queueFilters.minPriority);
        if (min !== null && isFinite(min)) items = items.filter(function (c) { return c.priority >= min; });
        /* highest priority first; at equal priority what is still open before what is closed */
        var closed = function (c) { return c.status === 'open' ? 0 : 1; };
        items.sort(function (a, b) {
          return b.priority - a.priority || closed(a) - closed(b) || b.opened_at - a.opened_at;
        });
        summary.textContent = tn('conflicts.count', items.length);
        patch(storeSel, S.replicas.map(function (r) { return r.replica; }), function () {
          return [h('option', { value: '', text: t('all_tills') })].concat(S.replicas.map(function (r) {
            return h('option', { value: r.replica, text: r.replica, selected: r.replica === queueFilters.replica });
          }));
        });
        storeSel.value = queueFilters.replica;
        patch(table, [items, Math.floor(Date.now() / 10000)], function () { return rows(items); });
      }, function (err) {
        if (!noTenantError(err)) throw err;
        summary.textContent = t('no_tenant');
        patch(table, [], function () { return emptyState(t('no_tenant')); });
      });
    }
    return { refresh: refresh };
  }

  /* --- one conflict */

  function conflictPage(main, id) {
    var head = h('div', { class: 'page-head' },
      h('p', {}, h('a', { href: '#/conflicts', class: 'back', text: t('back') })),
      h('h1', { id: 'page-title', tabindex: '-1' }, t('conflict.title', { id: id }), ' ',
        h('span', { id: 'conflict-status' })));
    var facts = h('section', { class: 'card', 'aria-labelledby': 'facts-h' });
    var timelineBox = h('section', { class: 'card', id: 'timeline-box', 'aria-labelledby': 'timeline-h' });
    var salesBox = h('section', { class: 'card', id: 'sales-box', 'aria-labelledby': 'sales-h' });
    var historyBox = h('section', { class: 'card', id: 'history-box', 'aria-labelledby': 'hist-h' });
    var actionsBox = h('section', { class: 'card actions-card', id: 'resolve-box', 'aria-labelledby': 'resolve-h' });
    var resultMsg = h('p', { class: 'inline-msg', id: 'resolve-result', role: 'status' });
    main.appendChild(head);
    main.appendChild(h('div', { class: 'conflict-grid' },
      h('div', { class: 'col-main' }, facts, timelineBox, salesBox, historyBox),
      h('div', { class: 'col-side' }, actionsBox)));
    var selected = {};
    var current = null;
    var builtFor = null;
    var sales = [];
    var extra = null; /* the timeline answer: product, similar SKUs, movements */

    function currentValue(c) {
      if (extra && extra.timeline) return extra.timeline.current;
      return c.observed;
    }

    function similarView() {
      var similar = (extra && extra.similar) || [];
      if (!similar.length) return null;
      return h('ul', { class: 'similar' }, similar.map(function (o) {
        return h('li', {}, t('product.did_you_mean', { sku: o.sku, name: o.name || t('product.none') }),
          o.look_alike ? h('span', { class: 'help', text: ' — ' + t('product.look_alike') }) : null);
      }));
    }

    function factsView(c) {
      var now = currentValue(c);
      var first = (c.history || []).length ? c.history[0].observed : null;
      var product = extra ? extra.product : undefined;
      var rows = [
        [t('invariant'), invName(c.invariant)],
        [t('location'), c.location === '-' ? '—' : c.location],
        [t('product'), productCell({ sku: c.sku, product_known: product === undefined ? c.product_known : product !== null,
          product_name: product ? product.name : c.product_name })],
        c.location !== '-' ? [t('current'), h('strong', { class: 'current ' + (now < 0 ? 'neg' : ''), id: 'current-value',
          text: now === null || now === undefined ? '—' : fmtNum(now) })] : null,
        first !== null && first !== undefined ? [t('first_observed'), fmtNum(first)] : null,
        [t('priority'), h('span', {}, h('strong', { text: String(c.priority) }), ' — ' + priorityWords(c))],
        [t('tills'), (c.replicas || []).join(', ') || '—'],
        [t('opened'), fmtTime(c.opened_at)],
        [t('updated_at'), fmtTime(c.updated_at)]
      ].filter(Boolean);
      return [
        h('h2', { id: 'facts-h', text: t('message') }),
        h('p', { class: 'message', id: 'conflict-message', text: conflictMessage(c, now), title: c.message }),
        similarView(),
        h('dl', { class: 'facts facts-grid' }, rows.map(function (r) {
          return h('div', {}, h('dt', { text: r[0] }), h('dd', {}, r[1]));
        })),
        c.resolution ? resolutionView(c.resolution, stateOf(c) === 'partial') : null,
        c.details && Object.keys(c.details).length ? detailsView(c.details) : null
      ];
    }

    function movementText(m) {
      if (m.kind === 'resolution') return t('mv.resolution', { action: actionName(m.action) });
      return t('mv.' + m.kind);
    }

    function timelineView(c) {
      var tl = extra && extra.timeline;
      var head = [h('h2', { id: 'timeline-h', text: t('timeline.title') }),
        h('p', { class: 'help', text: t('timeline.help', { sku: c.sku, location: c.location }) })];
      if (!tl) return head.concat([emptyState(extra ? t('timeline.none') : t('loading'))]);
      if (!tl.rows.length) return head.concat([emptyState(t('timeline.none'))]);
      var cols = [t('time'), t('movement'), t('store'), t('till'), t('change'), t('balance')];
      return head.concat([h('div', { class: 'table-wrap' }, h('table', { class: 'data movements' },
        h('caption', { class: 'sr-only', text: t('timeline.title') }),
        h('thead', {}, h('tr', {}, cols.map(function (x) { return h('th', { scope: 'col', text: x }); }))),
        h('tbody', {}, tl.rows.map(function (m) {
          var refs = (m.sales || []).map(function (sale) {
            return h('span', { class: 'sale-ref', title: sale.id }, saleRef(sale),
              sale.sku !== c.sku ? ' (' + t('mv.remapped', { sku: sale.sku }) + ')' : null,
              sale.voided ? [' ', h('span', { class: 'badge badge-voided', text: t('voided') })] : null,
              sale.remapped_to && sale.remapped_to !== c.sku ? [' ', h('span', { class: 'badge badge-voided', text: t('remapped') })] : null);
          });
          var till = m.kind === 'resolution' || m.kind === 'relay' ? (m.by || 'relay') : (m.writer || '—');
          return h('tr', { 'data-kind': m.kind, 'data-delta': m.delta },
            h('td', { 'data-label': t('time') }, m.at ? h('time', { text: fmtTime(m.at) }) : '—',
              m.at && m.at_source === 'relay' ? h('span', { class: 'help', text: ' (' + t('at.relay') + ')' }) : null),
            h('td', { 'data-label': t('movement') }, h('strong', { text: movementText(m) }),
              refs.length ? h('div', { class: 'refs' }, refs) : null),
            h('td', { 'data-label': t('store'), class: 'ident', text: c.location }),
            h('td', { 'data-label': t('till'), class: 'ident', text: till }),
            h('td', { 'data-label': t('change'), class: 'num ' + (m.delta < 0 ? 'neg' : 'pos'), text: fmtSigned(m.delta) }),
            h('td', { 'data-label': t('balance'), class: 'num ' + (m.balance < 0 ? 'neg' : ''), text: fmtNum(m.balance) }));
        }))))]);
    }

    function resolutionView(r, partial) {
      return h('div', { class: 'resolution' + (partial ? ' resolution-partial' : '') },
        h('h3', { text: partial ? t('resolution.partial') : t('resolution') }),
        h('dl', { class: 'facts facts-grid' },
          h('div', {}, h('dt', { text: t('action') }), h('dd', { text: actionName(r.action) })),
          h('div', {}, h('dt', { text: t('params') }), h('dd', {}, h('code', { text: paramsText(r.params || {}) }))),
          h('div', {}, h('dt', { text: t('by') }), h('dd', { text: r.by || '—' })),
          h('div', {}, h('dt', { text: t('note') }), h('dd', { text: r.note || '—' })),
          h('div', {}, h('dt', { text: t('time') }), h('dd', { text: fmtTime(r.at) }))));
    }

    function detailsView(details) {
      return h('div', { class: 'details' },
        h('h3', { text: t('discarded') }),
        h('table', { class: 'data' },
          h('thead', {}, h('tr', {}, [t('field'), t('value'), t('till'), t('time')].map(function (c) {
            return h('th', { scope: 'col', text: c });
          }))),
          h('tbody', {}, Object.keys(details).map(function (name) {
            return (details[name] || []).map(function (d) {
              return h('tr', {}, h('td', { 'data-label': t('field'), text: name }),
                h('td', { 'data-label': t('value') }, h('code', { text: JSON.stringify(d.value) })),
                h('td', { 'data-label': t('till'), text: d.by }),
                h('td', { 'data-label': t('time'), text: fmtTime(d.at_ms / 1000) }));
            });
          }))));
    }

    function paramsText(params) {
      var keys = Object.keys(params);
      if (!keys.length) return '—';
      return keys.map(function (k) {
        var ui = PARAM_UI[k];
        var v = params[k];
        if (k === 'sale_ids' && Array.isArray(v)) v = v.map(saleName);
        var label = ui && ui.label ? t(ui.label) : hasText('param.' + k) ? t('param.' + k) : k;
        return label + ': ' + (Array.isArray(v) ? v.join(', ') : JSON.stringify(v));
      }).join(' · ');
    }

    /** A sale id of this conflict by its till and time (the id itself if it is not listed). */
    function saleName(id) {
      for (var i = 0; i < sales.length; i++) if (sales[i].id === id && sales[i].replica) return saleRef(sales[i]);
      return id;
    }

    function salesView(c) {
      var canVoid = c.status === 'open';
      var body;
      if (!sales.length) body = emptyState(t('conflict.nosales'));
      else {
        body = h('div', { class: 'table-wrap' }, h('table', { class: 'data sales' },
          h('caption', { class: 'sr-only', text: t('conflict.sales') }),
          h('thead', {}, h('tr', {},
            (canVoid ? [h('th', { scope: 'col', class: 'check' }, h('span', { class: 'sr-only', text: t('act.void') }))] : [])
              .concat([t('sale'), t('till'), t('time'), t('quantity') + ' ' + c.sku, t('total')]
                .map(function (x) { return h('th', { scope: 'col', text: x }); })))),
          h('tbody', {}, sales.map(function (s) {
            var qty = (s.lines || []).filter(function (l) { return l.sku === c.sku; })
              .reduce(function (a, l) { return a + l.quantity; }, 0);
            var boxId = 'void-' + s.id;
            return h('tr', { 'data-sale': s.id, class: s.voided ? 'voided' : '' },
              canVoid ? h('td', { class: 'check' }, h('input', { type: 'checkbox', id: boxId, 'data-key': boxId,
                'data-sale-id': s.id, disabled: s.voided || !s.known, checked: !!selected[s.id],
                'aria-label': t('select_void', { id: s.id }),
                onchange: function (ev) { selected[s.id] = ev.target.checked; syncVoidButton(); } })) : null,
              h('td', { 'data-label': t('sale'), class: 'sale-id', title: s.id }, canVoid ? h('label', { for: boxId }, saleRef(s))
                : saleRef(s), ' ', h('span', { class: 'badge ' + (s.voided ? 'badge-voided' : 'badge-active'),
                text: s.voided ? t('voided') : t('active') })),
              h('td', { 'data-label': t('till'), class: 'ident', text: s.replica || '—' }),
              h('td', { 'data-label': t('time'), text: s.at_ms ? fmtTime(s.at_ms / 1000) : '—' }),
              h('td', { 'data-label': t('quantity') + ' ' + c.sku, class: 'num', text: s.known ? qty : '—' }),
              h('td', { 'data-label': t('total'), class: 'num', text: fmtMoney(s.total_cents) }));
          }))));
      }
      return [h('h2', { id: 'sales-h', text: t('conflict.sales') }), body];
    }

    function historyView(c) {
      return [h('h2', { id: 'hist-h', text: t('history') }),
        h('ol', { class: 'timeline' }, (c.history || []).map(function (ev, i, all) {
          var bits = [];
          if (ev.observed !== undefined && ev.observed !== null) bits.push(t('observed') + ': ' + fmtNum(ev.observed));
          if (ev.action) bits.push(t('action') + ': ' + actionName(ev.action));
          if (ev.by) bits.push(t('by') + ': ' + ev.by);
          if (ev.note) bits.push(t('note') + ': ' + ev.note);
          var closing = c.status === 'resolved' && !all.slice(i + 1).some(function (e) { return e.event === 'resolved'; });
          var name = ev.event === 'resolved' && ev.action !== 'accept' && !closing ? 'compensated' : ev.event;
          return h('li', { 'data-event': name }, h('time', { class: 'when', text: fmtTime(ev.at) }), ' ',
            h('strong', { text: t('ev.' + name) }), bits.length ? ' — ' + bits.join(' · ') : '');
        }))];
    }

    var common = {};
    /** Buttons of actions that take the ticked sales say whether any is ticked. */
    function syncVoidButton() {
      var any = Object.keys(selected).some(function (k) { return selected[k]; });
      actionsBox.querySelectorAll('button[data-needs-sales]').forEach(function (btn) {
        btn.setAttribute('aria-disabled', String(!any));
      });
    }

    /* A resolution asked again after no answer (503, network) keeps its key: the relay
       applies it at most once.  Any other answer ends it; the next one gets a new key. */
    var asking = null;
    function resolve(action, params, button) {
      var body = { action: action };
      Object.keys(params).forEach(function (k) { body[k] = params[k]; });
      var by = common.by.value.trim();
      if (by) { body.by = by; localStorage.setItem(BY_KEY, by); }
      if (common.note.value.trim()) body.note = common.note.value.trim();
      if (button) button.disabled = true;
      resultMsg.className = 'inline-msg';
      resultMsg.textContent = t('loading');
      var same = JSON.stringify(body);
      if (!asking || asking.body !== same) asking = { body: same, key: newKey() };
      return api('POST', '/api/sync/queue/' + encodeURIComponent(id) + '/resolve/', { body: body, key: asking.key })
        .then(function (res) {
          asking = null;
          var partial = stateOf(res) === 'partial';
          resultMsg.className = 'inline-msg ' + (partial ? 'warn' : 'ok');
          resultMsg.textContent = partial
            ? t('resolved_partial', { id: id, sku: res.sku, value: fmtNum(res.observed) })
            : t('resolved_ok', { id: id, status: t('st.' + res.status) });
          announce(resultMsg.textContent);
          selected = {};
          return Promise.all([refresh(), refreshOpenCount()]);
        }, function (e) {
          if (e.status !== 503 && e.status !== 0) asking = null;
          resultMsg.className = 'inline-msg bad';
          resultMsg.textContent = errText(e);
          announce(resultMsg.textContent);
        }).then(function () { if (button) button.disabled = false; });
    }

    function actionForm(key, help, fieldsList, submitText, onSubmit, extraClass) {
      var btn = h('button', { type: 'submit', class: 'btn ' + (extraClass || 'btn-primary'),
        'data-action': key, id: 'act-' + key + '-btn', text: submitText });
      var form = h('form', { class: 'action', id: 'act-' + key, novalidate: true,
        onsubmit: function (ev) { ev.preventDefault(); onSubmit(btn); } },
        h('p', { class: 'help', text: help }),
        fieldsList.length ? h('div', { class: 'field-row' }, fieldsList) : null,
        h('div', { class: 'actions' }, btn));
      return form;
    }

    function numField(name, label, value, required) {
      var fid = nextId('a-' + name);
      var input = h('input', { id: fid, name: name, type: 'number', step: '1', inputmode: 'numeric',
        value: String(value), required: required });
      return { el: h('div', { class: 'field field-small' }, h('label', { for: fid, text: label }), input), input: input };
    }

    function textField(name, label, value, required) {
      var fid = nextId('a-' + name);
      var input = h('input', { id: fid, name: name, type: 'text', value: value || '', autocomplete: 'off', required: required });
      return { el: h('div', { class: 'field' }, h('label', { for: fid, text: label }), input), input: input };
    }

    function invalid(input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      throw new Error(input.name);
    }

    function intOf(input) {
      var n = Number(input.value);
      if (input.value === '' || !Number.isInteger(n)) invalid(input);
      input.removeAttribute('aria-invalid');
      return n;
    }

    function guard(fn) {
      return function (btn) {
        try { fn(btn); } catch (e) { /* invalid input already flagged */ }
      };
    }

    function takesSales(a) {
      return a.params.some(function (p) { return p.kind === 'sale_ids' && p.required; });
    }

    /** Why action a cannot work on conflict c (null: it can). */
    function cannot(a, c) {
      if (a.name === 'restore' && extra && extra.product_ever === false) return t('restore.never', { sku: c.sku });
      return null;
    }

    /** Does the console offer action a (a row of the model's table) for conflict c? */
    function offered(a, c) {
      var ui = ACTION_UI[a.name] || {};
      var inv = c.invariant;
      if (a.applies_to.length && a.applies_to.indexOf(inv) < 0) return false;
      if (ui.onlyFor && ui.onlyFor.indexOf(inv) < 0) return false;
      if (ui.hideFor && ui.hideFor.indexOf(inv) >= 0) return false;
      return !takesSales(a) || (c.sales || []).length > 0;
    }

    /** The input of one parameter: { name, el (or null), read() -> value, undefined to leave it out }. */
    function paramInput(p, c) {
      var ui = PARAM_UI[p.name] || {};
      var label = ui.label ? t(ui.label) : p.name;
      if (p.kind === 'sale_ids') {
        return { name: p.name, el: null, read: function () {
          var ids = Object.keys(selected).filter(function (k) { return selected[k]; });
          if (ids.length || !p.required) return ids.length ? ids : undefined;
          resultMsg.className = 'inline-msg bad';
          resultMsg.textContent = t('void.none');
          var box = salesBox.querySelector('input[type=checkbox]:not([disabled])');
          if (box) box.focus();
          throw new Error(p.name);
        } };
      }
      if (p.kind === 'fields' && !p.required) return { name: p.name, el: null, read: function () { return undefined; } };
      if (ui.select === 'details') {
        var fid = nextId('a-' + p.name);
        var sel = h('select', { id: fid, name: p.name },
          [h('option', { value: '', text: t('all_fields') })].concat(Object.keys(c.details || {}).map(function (n) {
            return h('option', { value: n, text: n });
          })));
        return { name: p.name, el: h('div', { class: 'field' }, h('label', { for: fid, text: label }), sel),
          read: function () { return sel.value || undefined; } };
      }
      if (p.kind === 'int' || p.kind === 'positive_int') {
        var nf = numField(p.name, label, ui.value ? ui.value(c) : '', p.required);
        return { name: p.name, el: nf.el, read: function () {
          return nf.input.value === '' && !p.required ? undefined : intOf(nf.input);
        } };
      }
      /* a remap's target: the catalog product the SKU most looks like */
      var guess = p.name === 'sku' && extra && (extra.similar || []).length ? extra.similar[0].sku : '';
      var tf = textField(p.name, label, guess, p.required);
      return { name: p.name, el: tf.el, read: function () {
        var v = tf.input.value.trim();
        if (!v && p.required) invalid(tf.input);
        tf.input.removeAttribute('aria-invalid');
        if (!v) return undefined;
        if (p.kind !== 'fields') return v;
        try { return JSON.parse(v); } catch (e) { return invalid(tf.input); }
      } };
    }

    /** Resolve with action `name`, its parameters read from `inputs`. */
    function submitWith(name, inputs) {
      return guard(function (btn) {
        var params = {};
        inputs.forEach(function (i) {
          var v = i.read();
          if (v !== undefined) params[i.name] = v;
        });
        resolve(name, params, btn);
      });
    }

    function sameParams(a, b) {
      var names = function (x) { return x.params.map(function (p) { return p.name; }).join(','); };
      return names(a) === names(b);
    }

    /** The form of one action of the table (or its button, added to the form it joins). */
    function tableForm(a, c, built) {
      var ui = ACTION_UI[a.name] || {};
      var host = ui.joins && built[ui.joins];
      if (host && sameParams(a, host.action)) {
        var extra = h('button', { type: 'button', class: 'btn ' + (ui.style || 'btn-secondary'),
          'data-action': a.name, id: 'act-' + a.name + '-btn', text: actLabel(a.name) });
        extra.addEventListener('click', function () { submitWith(a.name, host.inputs)(extra); });
        host.form.querySelector('.actions').appendChild(extra);
        return null;
      }
      var inputs = a.params.map(function (p) { return paramInput(p, c); });
      var help = ui.help ? t(ui.help) : hasText('act.' + a.name + '.help') ? t('act.' + a.name + '.help') : a.help;
      var form = actionForm(a.name, help, inputs.map(function (i) { return i.el; }).filter(Boolean),
        actLabel(a.name), submitWith(a.name, inputs), ui.style);
      var why = cannot(a, c);
      if (why) {
        var btn = form.querySelector('button[type=submit]');
        btn.disabled = true;
        var whyId = nextId('why');
        btn.setAttribute('aria-describedby', whyId);
        form.insertBefore(h('p', { class: 'why-not', id: whyId, text: why }), form.querySelector('.actions'));
      }
      if (takesSales(a)) form.querySelector('button[type=submit]').setAttribute('data-needs-sales', '');
      var title = (ui.title || [a.name]).map(actLabel).join(' / ');
      built[a.name] = { action: a, inputs: inputs, form: form };
      return { form: form, title: title };
    }

    /** Custom: any action of the table, with its parameters as raw JSON. */
    function customForm() {
      var aid = nextId('a-custom-action');
      var pid = nextId('a-custom-params');
      var actSel = h('select', { id: aid, name: 'action' }, S.model.actions.map(function (a) {
        return h('option', { value: a.name, text: actionName(a.name) });
      }));
      var ta = h('textarea', { id: pid, name: 'params', rows: '4', spellcheck: 'false', class: 'mono',
        text: '{}' });
      var customErr = h('p', { class: 'form-error', role: 'alert' });
      var custom = actionForm('custom', t('act.custom.help'),
        [h('div', { class: 'field' }, h('label', { for: aid, text: t('action') }), actSel),
          h('div', { class: 'field field-wide' }, h('label', { for: pid, text: t('params_json') }), ta)],
        t('act.send'), function (btn) {
          var p;
          try {
            p = JSON.parse(ta.value || '{}');
            if (p === null || typeof p !== 'object' || Array.isArray(p)) throw new Error('{…}');
          } catch (e) {
            customErr.textContent = t('json.bad', { err: e.message });
            ta.setAttribute('aria-invalid', 'true');
            ta.focus();
            return;
          }
          customErr.textContent = '';
          ta.removeAttribute('aria-invalid');
          resolve(actSel.value, p, btn);
        }, 'btn-secondary');
      custom.insertBefore(customErr, custom.querySelector('.actions'));
      return { form: custom, title: t('act.custom') };
    }

    function buildActions(c) {
      clear(actionsBox);
      actionsBox.appendChild(h('h2', { id: 'resolve-h', text: t('resolve.title') }));
      if (c.status !== 'open') {
        actionsBox.appendChild(h('p', { class: 'help', text: t('resolve.closed') }));
        actionsBox.appendChild(resultMsg);
        return;
      }
      var byId = nextId('by');
      var noteId = nextId('note');
      common.by = h('input', { id: byId, type: 'text', autocomplete: 'name', value: localStorage.getItem(BY_KEY) || 'admin' });
      common.note = h('input', { id: noteId, type: 'text', autocomplete: 'off' });
      actionsBox.appendChild(h('fieldset', { class: 'common' }, h('legend', { text: t('resolve.common') }),
        h('div', { class: 'field-row' },
          h('div', { class: 'field' }, h('label', { for: byId, text: t('by') }), common.by),
          h('div', { class: 'field' }, h('label', { for: noteId, text: t('note') }), common.note))));
      actionsBox.appendChild(resultMsg);
      var built = {};
      var forms = S.model.actions.filter(function (a) { return offered(a, c); })
        .map(function (a) { return tableForm(a, c, built); })
        .filter(Boolean);
      forms.push(customForm());
      forms.forEach(function (f) {
        actionsBox.appendChild(h('section', { class: 'action-block', 'aria-label': f.title },
          h('h3', { text: f.title }), f.form));
      });
      syncVoidButton();
    }

    var timelineFor = null;

    function refresh() {
      return Promise.all([
        api('GET', '/api/sync/queue/' + encodeURIComponent(id) + '/'),
        api('GET', '/api/sync/queue/' + encodeURIComponent(id) + '/sales/').catch(function (e) {
          if (e instanceof ApiError && e.status === 404 && current) return { results: sales };
          if (e instanceof ApiError && e.status === 404) return { results: [] };
          throw e;
        })
      ]).then(function (res) {
        /* the movements are re-read when the conflict changed, and every 10 s */
        var key = JSON.stringify([res[0].updated_at, Math.floor(Date.now() / 10000)]);
        if (key === timelineFor) return res;
        return api('GET', '/api/sync/queue/' + encodeURIComponent(id) + '/timeline/').then(function (tl) {
          timelineFor = key;
          extra = tl;
          return res;
        }, function (e) {
          if (e instanceof ApiError && e.status === 404) return res; /* an older relay */
          throw e;
        });
      }).then(function (res) {
        var c = res[0];
        sales = (res[1] && res[1].results) || [];
        if (!sales.length && (c.sales || []).length) {
          sales = c.sales.map(function (sid) { return { id: sid, known: true }; });
        }
        if (current && stateOf(current) !== stateOf(c)) announce(t('resolved_ok', { id: id, status: t('st.' + stateOf(c)) }));
        current = c;
        patch(document.getElementById('conflict-status'), [stateOf(c)], function () { return statusBadge(stateOf(c)); });
        patch(facts, [c, extra, sales], function () { return factsView(c); });
        if (c.location === '-') timelineBox.hidden = true;
        else patch(timelineBox, [c.sku, extra], function () { return timelineView(c); });
        patch(salesBox, [c.status, c.sku, sales, selected], function () { return salesView(c); });
        patch(historyBox, [c.history], function () { return historyView(c); });
        var shape = [c.status, c.invariant, (c.sales || []).length, Object.keys(c.details || {}),
          extra ? [extra.product_ever, (extra.similar || []).map(function (o) { return o.sku; })] : null];
        if (JSON.stringify(shape) !== builtFor) {
          builtFor = JSON.stringify(shape);
          buildActions(c);
        }
      }, function (e) {
        if (e instanceof ApiError && e.status === 404) {
          patch(facts, ['404'], function () { return emptyState(errText(e)); });
          return;
        }
        throw e;
      });
    }
    return { refresh: refresh };
  }

  /* --- sync log */

  var logFilters = { replica: '', limit: '100' };

  function logPage(main) {
    var summary = h('p', { class: 'summary', id: 'log-summary' });
    var rid = nextId('f-store');
    var lid = nextId('f-limit');
    var storeSel = h('select', { id: rid, name: 'replica' });
    var limitSel = h('select', { id: lid, name: 'limit' }, ['50', '100', '500', '1000'].map(function (n) {
      return h('option', { value: n, text: n, selected: n === logFilters.limit });
    }));
    function onFilter() {
      logFilters.replica = storeSel.value;
      logFilters.limit = limitSel.value;
      refresh().catch(function (e) { notice(errText(e)); });
    }
    storeSel.addEventListener('change', onFilter);
    limitSel.addEventListener('change', onFilter);
    var table = h('div', { class: 'table-wrap', id: 'log-table' });
    main.appendChild(pageHeader(t('log.title'), summary));
    main.appendChild(h('form', { class: 'filters card', role: 'search', 'aria-label': t('filters'),
      onsubmit: function (ev) { ev.preventDefault(); onFilter(); } },
      h('div', { class: 'field' }, h('label', { for: rid, text: t('till') }), storeSel),
      h('div', { class: 'field' }, h('label', { for: lid, text: t('limit') }), limitSel)));
    main.appendChild(table);

    function rows(items) {
      if (!items.length) return emptyState(t('log.none'));
      return h('table', { class: 'data log' },
        h('caption', { class: 'sr-only', text: t('log.title') }),
        h('thead', {}, h('tr', {}, [t('started'), t('duration'), t('till'), t('kind'), t('outcome'), t('docs'),
          t('updates_inout'), t('bytes_inout'), t('error')].map(function (c) { return h('th', { scope: 'col', text: c }); }))),
        h('tbody', {}, items.map(function (s) {
          var outcome = s.ended_at ? s.outcome : 'running';
          return h('tr', { 'data-session': s.session_id },
            h('td', { 'data-label': t('started'), text: fmtTime(s.started_at) }),
            h('td', { 'data-label': t('duration'), text: s.ended_at ? fmtDuration(s.started_at, s.ended_at) : t('running') }),
            h('td', { 'data-label': t('till'), class: 'ident', text: s.replica_id || '—' }),
            h('td', { 'data-label': t('kind'), text: kindText(s.kind) }),
            h('td', { 'data-label': t('outcome') }, h('span', { class: 'outcome outcome-' + outcome,
              text: s.ended_at ? outcomeText(s.outcome) : t('running') })),
            h('td', { 'data-label': t('docs'), class: 'num', text: fmtNum(s.docs) }),
            h('td', { 'data-label': t('updates_inout'), class: 'num', text: fmtNum(s.updates_received) + ' / ' + fmtNum(s.updates_sent) }),
            h('td', { 'data-label': t('bytes_inout'), class: 'num', text: fmtNum(s.bytes_received) + ' / ' + fmtNum(s.bytes_sent) }),
            h('td', { 'data-label': t('error'), class: 'err', title: s.error || '', text: srvText(s.error) }));
        })));
    }

    function refresh() {
      return Promise.all([
        api('GET', '/api/sync/log/', { query: { replica: logFilters.replica, limit: logFilters.limit } }),
        refreshReplicas()
      ]).then(function (res) {
        var items = res[0].results;
        summary.textContent = tn('log.count', items.length);
        patch(storeSel, S.replicas.map(function (r) { return r.replica; }), function () {
          return [h('option', { value: '', text: t('all_tills') })].concat(S.replicas.map(function (r) {
            return h('option', { value: r.replica, text: r.replica, selected: r.replica === logFilters.replica });
          }));
        });
        storeSel.value = logFilters.replica;
        patch(table, items, function () { return rows(items); });
      }, function (err) {
        if (!noTenantError(err)) throw err;
        summary.textContent = t('no_tenant');
        patch(table, [], function () { return emptyState(t('no_tenant')); });
      });
    }
    return { refresh: refresh };
  }

  /* --- relay nodes */

  function nodesPage(main) {
    var summary = h('p', { class: 'summary', id: 'nodes-summary' });
    var table = h('div', { class: 'table-wrap', id: 'nodes-table' });
    main.appendChild(pageHeader(t('nodes.title'), summary));
    main.appendChild(h('p', { class: 'help', id: 'nodes-help', text: t('nodes.help') }));
    main.appendChild(table);

    function figure(n, name) {
      var v = (n.metrics || {})[name];
      return typeof v === 'number' ? fmtNum(v) : '—';
    }

    function rows(nodes) {
      if (!nodes.length) return emptyState(t('nodes.none'));
      return h('table', { class: 'data nodes', 'aria-describedby': 'nodes-help' },
        h('caption', { class: 'sr-only', text: t('nodes.title') }),
        h('thead', {}, h('tr', {}, [t('node'), t('node.reviews'), t('node.connections'), t('node.stores'),
          t('node.updates'), t('node.queue'), t('node.beat'), t('node.started')].map(function (c) {
          return h('th', { scope: 'col', text: c });
        }))),
        h('tbody', {}, nodes.map(function (n) {
          var reviews = (n.metrics || {}).reviewer === 1;
          return h('tr', { 'data-node': n.node },
            h('th', { scope: 'row', 'data-label': t('node'), class: 'ident' }, n.node,
              n['this'] ? [' ', h('span', { class: 'badge badge-active', text: t('node.this') })] : null),
            h('td', { 'data-label': t('node.reviews'), 'data-reviews': String(reviews) },
              reviews ? h('span', { class: 'badge badge-online', text: t('node.reviewer') }) : t('no')),
            h('td', { 'data-label': t('node.connections'), class: 'num', text: figure(n, 'connections') }),
            h('td', { 'data-label': t('node.stores'), class: 'num', text: fmtNum(n.stores_connected) }),
            h('td', { 'data-label': t('node.updates'), class: 'num', text: figure(n, 'updates_total') }),
            h('td', { 'data-label': t('node.queue'), class: 'num', text: figure(n, 'queue_depth') }),
            h('td', { 'data-label': t('node.beat') }, h('time', {
              datetime: new Date(n.seen_at * 1000).toISOString(), title: fmtTime(n.seen_at), text: ago(n.seen_at) })),
            h('td', { 'data-label': t('node.started'), text: fmtTime(n.started_at) }));
        })));
    }

    function refresh() {
      return api('GET', '/api/sync/nodes/', { query: { tenant: null } }).then(function (data) {
        var nodes = (data.results || []).slice().sort(function (a, b) { return a.node.localeCompare(b.node); });
        summary.textContent = tn('nodes.count', nodes.length);
        patch(table, [nodes, Math.floor(Date.now() / 5000)], function () { return rows(nodes); });
      });
    }
    return { refresh: refresh };
  }

  /* ------------------------------------------------------------------ router */

  function parseRoute() {
    var hash = location.hash || '';
    if (hash.indexOf('#/') !== 0) return null;
    var parts = hash.slice(2).split('/');
    return { name: parts[0] || 'conflicts', arg: parts[1] ? decodeURIComponent(parts[1]) : null };
  }

  function route() {
    var r = parseRoute();
    if (!r) { location.replace('#/' + (S.token ? 'conflicts' : 'login')); return; }
    if (!S.token && r.name !== 'login') { location.replace('#/login'); return; }
    if (S.token && r.name === 'login') { location.replace('#/conflicts'); return; }
    var main = document.getElementById('main');
    clear(main);
    notice('');
    S.inflight = false;
    var page;
    if (r.name === 'login') page = loginPage(main);
    else {
      setShell(true);
      if (r.name === 'stores') page = storesPage(main);
      else if (r.name === 'conflict' && r.arg) page = conflictPage(main, r.arg);
      else if (r.name === 'log') page = logPage(main);
      else if (r.name === 'nodes') page = nodesPage(main);
      else { r.name = 'conflicts'; page = conflictsPage(main); }
    }
    S.page = page;
    S.routeName = r.name;
    markNav(r.name);
    var focus = (page && page.focus) || document.getElementById('page-title');
    if (focus && S.booted) focus.focus();
    S.booted = true;
    tick();
  }

  function setLang(lang) {
    if (lang !== 'es' && lang !== 'en') return;
    S.lang = lang;
    try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* private mode */ }
    applyStaticI18n();
    route();
  }

  function boot() {
    applyStaticI18n();
    document.querySelectorAll('.lang-switch button').forEach(function (b) {
      b.addEventListener('click', function () { setLang(b.getAttribute('data-lang')); });
    });
    document.getElementById('logout').addEventListener('click', function () { logout(''); });
    document.getElementById('tenant-select').addEventListener('change', function (ev) {
      S.tenant = ev.target.value;
      sessionStorage.setItem(TENANT_KEY, S.tenant);
      route();
    });
    document.getElementById('skip-link').addEventListener('click', function (ev) {
      ev.preventDefault();
      document.getElementById('main').focus();
    });
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) tick(); });
    window.setInterval(tick, POLL_MS);
    route();
  }

  /* exposed for tests and debugging only */
  window.tiendasyncConsole = { state: S, t: t, setLang: setLang, refresh: tick };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
}());
