// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Lethe: the public record of a federation that can provably forget
/// @notice Node registry and share keys, rounds approved by a node quorum (the federation's
///         consensus on each global model), forget requests and their unlearning certificates;
///         nodes' stakes, the reward pool and slashing for a missed forget deadline.
/// @dev The audit replays events, so history (CIDs, hashes, who approved) lives in events and
///      storage keeps only what access control and state transitions read. No function loops
///      over an unbounded set; the roster views loop, but views cost no gas. Every transfer
///      of ether is a pull (the payee calls) made after all state changes (checks, effects,
///      interactions), so a reentrant payee finds nothing left to take.
contract Lethe {
    enum ForgetState {
        None,
        Requested,
        Certified,
        Completed
    }

    /// @dev One slot. `quorum` is fixed when the round is proposed (so admitting or removing
    ///      nodes later cannot move the goalposts) and is never 0 for a proposed round.
    ///      `admissions` is the admission counter at proposal: only nodes admitted by then may
    ///      approve.
    ///      `reward` is what each node that approves the round earns once it is finalized, fixed
    ///      at proposal (the owner changing the policy later moves no goalposts either).
    ///      `approvers` holds the approval bits of node ids 1..56 (bit id - 1) in the slot the
    ///      round writes anyway: a round of a small federation records who approved it for no
    ///      extra storage slot; higher ids use `_moreApprovers`.
    struct Round {
        uint32 quorum;
        uint32 approvals;
        bool finalized;
        uint32 admissions;
        uint96 reward;
        uint56 approvers;
    }

    /// @dev One slot: an admitted node's place in `_roster` (plus one; 0 = not admitted), its
    ///      admission serial (a node removed and admitted again gets a new one; 0 once
    ///      removed) and its id: given at its first admission and kept for ever, so the
    ///      approval bits of a node's past rounds stay its own after removal.
    ///      `certifications` counts the node's certified forget requests, for ever: a records
    ///      root it signed names the count when it signed, and `requestForget` accepts only a
    ///      root naming the current one, so a root from before the node forgot a record
    ///      cannot open a request for that record again.
    struct Member {
        uint128 positionPlusOne;
        uint64 serial;
        uint32 id;
        uint32 certifications;
    }

    /// @notice A node's signed commitment to its records and a commitment's place in it.
    /// @dev `signature` is the node's EIP-712 `RecordsRoot(round, root, count, certifications)`
    ///      in EIP-2098 form: `root` is the Merkle root (protocol/merkle.py) over the `count`
    ///      sorted keyed record commitments it announced for round `round`; `proof` shows the
    ///      requested commitment is leaf `index`.
    struct RecordsProof {
        uint64 round;
        uint32 count;
        uint32 certifications;
        uint32 index;
        bytes32 root;
        bytes signature;
        bytes32[] proof;
    }

    /// @dev `node` is the record's owner, named by the request; only it certifies.
    ///      `afterRound` is the last proposed round when the node certified: only a later
    ///      round can contain the node's retrained model. `answerable` is set while the request
    ///      has a deadline (block `deadline`, second slot, written only then) and is neither
    ///      certified nor slashed; `slashed` once the node paid for missing it.
    struct Forget {
        ForgetState state;
        address node;
        uint64 afterRound;
        bool answerable;
        bool slashed;
        uint64 deadline;
    }

    /// @dev One slot per account that staked. `unlockBlock` is 0 until the node asks to
    ///      unstake; `openForgets` counts the answerable requests naming it (it cannot
    ///      withdraw while one is open).
    struct Stake {
        uint128 amount;
        uint64 unlockBlock;
        uint32 openForgets;
    }

    /// @dev Two slots, set by the owner. All zero (the default) means no stake to join, no
    ///      reward, no forget deadline: the federation of earlier versions.
    struct StakePolicy {
        uint128 requiredStake;
        uint128 slashAmount;
        uint96 rewardPerRound;
        uint64 forgetDeadlineBlocks;
        uint64 unstakeDelayBlocks;
    }

    /// @notice EIP-712 type of a node's off-chain approval: exactly what `proposeRound` records.
    bytes32 public constant ROUND_APPROVAL_TYPEHASH = keccak256(
        "RoundApproval(uint64 round,bytes32 globalModelHash,string globalModelCid,bytes32 updatesRoot,string manifestCid)"
    );
    /// @notice EIP-712 type of a node's commitment to its records in one round.
    bytes32 public constant RECORDS_ROOT_TYPEHASH =
        keccak256("RecordsRoot(uint64 round,bytes32 root,uint32 count,uint32 certifications)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// @dev The domain every Lethe signature uses (protocol/typed_data.py): name and version.
    bytes32 private constant NAME_HASH = keccak256("Lethe");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev Node ids 1..56 keep their approval bits in the round's own slot.
    uint256 private constant PACKED_IDS = 56;

    address public immutable owner;
    uint256 public immutable deployedBlock;

    // Slot 0, read together by every coordinator call: 20 + 8 + 4 bytes.
    address public coordinator;
    uint64 public lastRound;
    /// @notice Quorum set by the owner; 0 means the default ceil(2n/3) of admitted nodes.
    uint32 public configuredQuorum;
    /// @notice Nodes admitted so far (ever): the serial of the latest admission.
    uint32 public admissions;
    /// @notice Distinct nodes ever admitted: the id of the latest new node.
    uint32 public nodeIds;
    /// @notice Hash chain of every node by id: h(k) = keccak256(abi.encode(h(k - 1), node k)),
    ///         h(0) = 0. `proposeRoundSigned` checks its list of nodes against it, one hash per
    ///         id instead of one storage read per signer.
    bytes32 public nodeIdsHash;

    address[] private _roster;
    mapping(address node => Member) private _members;
    mapping(address node => bytes32 x25519PublicKey) public nodeKey;
    mapping(uint64 round => Round) private _rounds;
    /// @dev What `approveRound` checks a round proposed by `proposeRound` against:
    ///      keccak256(abi.encode(globalModelHash, updatesRoot)). A round proposed with signed
    ///      approvals stores none (one storage slot less per round): its signatures are the
    ///      reference, see `approveRoundWitnessed`.
    mapping(uint64 round => bytes32) private _proposals;
    /// @dev Approval bits of node ids above 56: word w holds ids 57 + 256w .. 312 + 256w.
    mapping(uint64 round => mapping(uint256 word => uint256 bits)) private _moreApprovers;
    /// @dev Bit id - 1 (word (id - 1) / 256) is set while node id is admitted.
    mapping(uint256 word => uint256 bits) private _activeIds;
    mapping(bytes32 requestId => Forget) private _forgets;

    /// @notice Stake to join, slash amount, reward per round, forget deadline, unstake delay.
    StakePolicy public stakePolicy;
    /// @notice Funded ether (plus slashed stake) not yet paid out as rewards.
    uint256 public rewardPool;
    mapping(address account => Stake) private _stakes;
    mapping(uint64 round => mapping(address node => bool)) public rewardClaimed;

    /// @notice σ of the noise the senders add inside each round's secure sum, in millionths
    ///         of a model unit per coordinate of the global model (protocol/noise.py). Nodes
    ///         read it here at every share: the coordinator cannot lower it.
    uint32 public noiseScaleMicros = 100000;

    event CoordinatorAdmitted(address indexed coordinator, address indexed previous);
    event NodeAdmitted(address indexed node, uint256 nodeCount);
    event NodeRemoved(address indexed node, uint256 nodeCount);
    event KeyRegistered(address indexed node, bytes32 key);
    event QuorumSet(uint32 configuredQuorum);
    event NoiseScaleSet(uint32 noiseScaleMicros);
    event RoundProposed(
        uint64 indexed round,
        address indexed proposer,
        bytes32 globalModelHash,
        string globalModelCid,
        bytes32 updatesRoot,
        string manifestCid,
        uint32 quorum,
        uint256 nodeCount
    );
    event RoundApproved(uint64 indexed round, address indexed node, uint32 approvals);
    /// @notice Approvals signed off chain and carried by one transaction, in the order counted.
    event RoundApprovedBy(uint64 indexed round, address[] nodes, uint32 approvals);
    event RoundFinalized(uint64 indexed round, uint32 approvals, uint32 quorum);
    /// @notice `requestLabel` is the request id's preimage (requestId = keccak256(label)) when
    ///         the coordinator gives it, so the node it names can act on the event alone.
    event ForgetRequested(
        bytes32 indexed requestId,
        bytes32 recordCommitment,
        address indexed coordinator,
        address indexed node,
        string requestLabel
    );
    event ForgetCertified(
        bytes32 indexed requestId,
        address indexed node,
        string certificateCid,
        bytes32 newModelHash,
        uint64 afterRound
    );
    event ForgetCompleted(bytes32 indexed requestId, uint64 indexed round, address indexed node);
    event StakePolicySet(
        uint128 requiredStake,
        uint128 slashAmount,
        uint96 rewardPerRound,
        uint64 forgetDeadlineBlocks,
        uint64 unstakeDelayBlocks
    );
    event Staked(address indexed node, uint256 amount, uint256 total);
    event UnstakeRequested(address indexed node, uint256 amount, uint64 unlockBlock);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event RewardsFunded(address indexed funder, uint256 amount, uint256 pool);
    event RewardClaimed(uint64 indexed round, address indexed node, uint256 amount);
    event ForgetSlashed(
        bytes32 indexed requestId, address indexed node, address indexed caller, uint256 amount, uint256 stakeLeft
    );

    error NotOwner(address caller);
    error NotCoordinator(address caller);
    error NotAdmittedNode(address caller);
    error ZeroAddress();
    error AlreadyAdmitted(address node);
    error RoleConflict(address account);
    error InvalidKey();
    error NoiseScaleTooLarge(uint32 noiseScaleMicros, uint32 limit);
    error RoundNotNext(uint64 round, uint64 expected);
    error QuorumUnreachable(uint256 quorum, uint256 nodeCount);
    error UnknownRound(uint64 round);
    error AlreadyApproved(uint64 round, address node);
    error BadSignatures(uint256 length);
    error InvalidSignature(uint256 index);
    error BadNodeList(uint256 length, uint256 nodeIds);
    error ProposalMismatch(uint64 round);
    error AdmittedAfterProposal(uint64 round, address node);
    error RequestExists(bytes32 requestId);
    error LabelMismatch(bytes32 requestId);
    error UnknownRequest(bytes32 requestId);
    error AlreadyCertified(bytes32 requestId, address node);
    error NotRecordOwner(bytes32 requestId, address caller);
    error NotCertified(bytes32 requestId);
    error AlreadyCompleted(bytes32 requestId);
    error RoundNotFinalized(uint64 round);
    error RoundBeforeCertificate(uint64 round, uint64 afterRound);
    error ZeroAmount();
    error StakeTooLow(address node, uint256 staked, uint256 required);
    error UnstakePending(address node, uint64 unlockBlock);
    error NoUnstakeRequested(address node);
    error StakeLocked(address node, uint64 unlockBlock);
    error OpenForgets(address node, uint32 count);
    error NotApprover(uint64 round, address node);
    error RewardAlreadyClaimed(uint64 round, address node);
    error RewardPoolShort(uint256 owed, uint256 pool);
    error TransferFailed(address to, uint256 amount);
    error NoDeadline(bytes32 requestId);
    error DeadlineNotPassed(bytes32 requestId, uint64 deadline);
    error AlreadySlashed(bytes32 requestId);
    error StaleRecordsRoot(address node, uint32 certifications, uint32 current);
    error NotRecordsRootSigner(address node);
    error NotCommitted(address node, bytes32 recordCommitment);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyCoordinator() {
        if (msg.sender != coordinator) revert NotCoordinator(msg.sender);
        _;
    }

    modifier onlyNode() {
        if (_members[msg.sender].positionPlusOne == 0) revert NotAdmittedNode(msg.sender);
        _;
    }

    /// @param coordinator_ First coordinator, or the zero address to admit one later.
    /// @param quorum_ Approvals a round needs; 0 for the default ceil(2n/3).
    constructor(address coordinator_, uint32 quorum_) {
        owner = msg.sender;
        deployedBlock = block.number;
        configuredQuorum = quorum_;
        emit QuorumSet(quorum_);
        if (coordinator_ != address(0)) {
            coordinator = coordinator_;
            emit CoordinatorAdmitted(coordinator_, address(0));
        }
    }

    // ----- roles -------------------------------------------------------------------------

    /// @notice Make `account` the coordinator (replacing the previous one).
    function admitCoordinator(address account) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        // One address, one role: otherwise the coordinator could certify its own requests.
        if (_members[account].positionPlusOne != 0) revert RoleConflict(account);
        address previous = coordinator;
        coordinator = account;
        emit CoordinatorAdmitted(account, previous);
    }

    /// @notice Admit `node` to the federation.
    function admitNode(address node) external onlyOwner {
        if (node == address(0)) revert ZeroAddress();
        if (node == coordinator) revert RoleConflict(node);
        if (_members[node].positionPlusOne != 0) revert AlreadyAdmitted(node);
        Stake storage s = _stakes[node];
        uint256 required = stakePolicy.requiredStake;
        if (s.unlockBlock != 0) revert UnstakePending(node, s.unlockBlock);
        if (s.amount < required) revert StakeTooLow(node, s.amount, required);
        _roster.push(node);
        uint256 count = _roster.length;
        uint32 serial = admissions + 1;
        admissions = serial;
        uint32 id = _members[node].id;
        if (id == 0) {
            id = nodeIds + 1;
            nodeIds = id;
            nodeIdsHash = keccak256(abi.encode(nodeIdsHash, node));
        }
        _members[node] =
            Member({positionPlusOne: uint128(count), serial: serial, id: id, certifications: _members[node].certifications});
        _activeIds[(id - 1) / 256] |= 1 << ((id - 1) % 256);
        emit NodeAdmitted(node, count);
    }

    /// @notice Remove `node`; its past approvals and certificates stay on record, and it can
    ///         approve no round and certify no request from now on (admitted again, it counts
    ///         only for rounds proposed after that).
    function removeNode(address node) external onlyOwner {
        if (_members[node].positionPlusOne == 0) revert NotAdmittedNode(node);
        _removeNode(node);
    }

    function _removeNode(address node) private {
        uint256 position = _members[node].positionPlusOne;
        uint256 last = _roster.length;
        if (position != last) {
            address moved = _roster[last - 1];
            _roster[position - 1] = moved;
            _members[moved].positionPlusOne = uint128(position);
        }
        _roster.pop();
        // The id stays: the node's past approvals (and their rewards) remain its own.
        uint32 id = _members[node].id;
        _members[node] =
            Member({positionPlusOne: 0, serial: 0, id: id, certifications: _members[node].certifications});
        _activeIds[(id - 1) / 256] &= ~(1 << ((id - 1) % 256));
        delete nodeKey[node];
        emit NodeRemoved(node, last - 1);
    }

    /// @notice Set the approvals a round needs; 0 restores the default ceil(2n/3).
    /// @dev Takes effect for rounds proposed afterwards.
    function setQuorum(uint32 quorum_) external onlyOwner {
        configuredQuorum = quorum_;
        emit QuorumSet(quorum_);
    }

    /// @notice Set σ of the noise inside every later round's secure sum (millionths).
    /// @dev The limit matches the fixed-point headroom every node reserves for the noise.
    function setNoiseScale(uint32 micros) external onlyOwner {
        if (micros > 500000) revert NoiseScaleTooLarge(micros, 500000);
        noiseScaleMicros = micros;
        emit NoiseScaleSet(micros);
    }

    /// @notice Publish (or rotate) the caller's X25519 public key for secret shares.
    /// @dev Every node seals shares to every member's key, so a key no Diffie-Hellman can use
    ///      would fail every round: refused here. The key is the little-endian u-coordinate
    ///      (RFC 7748); refused are u >= 2^255 - 19 (non-canonical, including a set top bit)
    ///      and the u of every point of order dividing 8 on the curve or its twist, after
    ///      which the shared secret is all zero whatever the scalar: 0, 1, p - 1 and the two
    ///      order-8 points (libsodium's X25519 blocklist, less its non-canonical entries).
    function registerKey(bytes32 key) external onlyNode {
        if (!_usableKey(key)) revert InvalidKey();
        nodeKey[msg.sender] = key;
        emit KeyRegistered(msg.sender, key);
    }

    uint256 private constant X25519_P = 2 ** 255 - 19;
    uint256 private constant X25519_ORDER8_A =
        325606250916557431795983626356110631294008115727848805560023387167927233504;
    uint256 private constant X25519_ORDER8_B =
        39382357235489614581723060781553021112529911719440698176882885853963445705823;

    function _usableKey(bytes32 key) private pure returns (bool) {
        uint256 u = _littleEndian(uint256(key));
        return u < X25519_P && u > 1 && u != X25519_P - 1 && u != X25519_ORDER8_A && u != X25519_ORDER8_B;
    }

    /// @dev The 32 bytes of `v` in reverse order.
    function _littleEndian(uint256 v) private pure returns (uint256) {
        v = ((v >> 8) & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF)
            | ((v & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF) << 8);
        v = ((v >> 16) & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF)
            | ((v & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF) << 16);
        v = ((v >> 32) & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF)
            | ((v & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF) << 32);
        v = ((v >> 64) & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF)
            | ((v & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF) << 64);
        return (v >> 128) | (v << 128);
    }

    // ----- rounds ------------------------------------------------------------------------

    /// @notice Propose round `round`'s global model for the nodes' approval.
    /// @dev Rounds are numbered 1, 2, 3, … with no gaps, so "a round after the certificate" is
    ///      well defined and no proposal can exhaust the round numbers.
    function proposeRound(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid
    ) external onlyCoordinator {
        _rounds[round] = _propose(round, globalModelHash, globalModelCid, updatesRoot, manifestCid);
        _proposals[round] = keccak256(abi.encode(globalModelHash, updatesRoot));
    }

    /// @notice Propose round `round` and count, in the same transaction, the approvals the
    ///         nodes signed off chain (EIP-712 `RoundApproval` of exactly this proposal).
    /// @param nodes Every node ever admitted, 20 bytes each in id order (ids 1..nodeIds): it
    ///        must hash to `nodeIdsHash`, so no storage is read per signer.
    /// @param approvals 66 bytes per approval, ids strictly increasing: the node's id (2
    ///        bytes), then its signature in EIP-2098 form (r, then s with v - 27 in its top bit).
    /// @dev The whole call reverts unless each signature recovers to the node with that id and
    ///      that node is admitted now; content of another round, contract or chain recovers
    ///      another address. The coordinator checks signatures before sending; a node left
    ///      out approves by itself with `approveRound`.
    function proposeRoundSigned(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid,
        bytes calldata nodes,
        bytes calldata approvals
    ) external onlyCoordinator {
        _storeSigned(
            round,
            _propose(round, globalModelHash, globalModelCid, updatesRoot, manifestCid),
            approvalDigest(round, globalModelHash, globalModelCid, updatesRoot, manifestCid),
            nodes,
            approvals
        );
    }

    /// @notice Approve round `round` after checking the caller's commitment is in its
    ///         updatesRoot and its CID's bytes hash to its globalModelHash; the approval names
    ///         both, and counts only if they are the ones proposed.
    /// @dev Approvals after finalization are still recorded: every attestation is evidence.
    ///      Only nodes admitted when the round was proposed (and still admitted) approve.
    ///      Any node can always approve this way, whatever the coordinator does with its
    ///      off-chain signature.
    function approveRound(uint64 round, bytes32 globalModelHash, bytes32 updatesRoot) external {
        if (_rounds[round].quorum == 0) revert UnknownRound(round);
        if (_proposals[round] != keccak256(abi.encode(globalModelHash, updatesRoot))) revert ProposalMismatch(round);
        _approveAsCaller(round);
    }

    /// @notice Approve round `round`, proposed with signed approvals, by naming its content and
    ///         showing one counted approver's signature over exactly that content (any
    ///         signature carried by its `proposeRoundSigned` transaction).
    /// @dev The path of a node whose signature the coordinator left out. An approver signed
    ///      this content for this round in this contract, so it is the proposed one.
    function approveRoundWitnessed(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid,
        address witness,
        bytes calldata witnessSignature
    ) external {
        if (_rounds[round].quorum == 0) revert UnknownRound(round);
        _checkWitness(
            round,
            approvalDigest(round, globalModelHash, globalModelCid, updatesRoot, manifestCid),
            witness,
            witnessSignature
        );
        _approveAsCaller(round);
    }

    /// @dev Reverts unless `witness` approved `round` and signed `digest` (EIP-2098 form).
    function _checkWitness(uint64 round, bytes32 digest, address witness, bytes calldata signature)
        private
        view
    {
        if (!_approved(round, _members[witness].id)) revert NotApprover(round, witness);
        if (_recoverCompact(digest, signature) != witness) revert InvalidSignature(0);
    }

    /// @dev The signer of `digest` by an EIP-2098 (64-byte) signature; address 0 if none.
    function _recoverCompact(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 64) revert BadSignatures(signature.length);
        bytes32 vs = bytes32(signature[32:64]);
        return ecrecover(
            digest,
            uint8(uint256(vs) >> 255) + 27,
            bytes32(signature[0:32]),
            vs & 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
        );
    }

    /// @dev The EIP-712 domain every Lethe signature is bound to: this chain, this contract.
    function _domainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @dev Counts the caller's approval of proposed round `round` (content already checked).
    function _approveAsCaller(uint64 round) private {
        Member memory m = _members[msg.sender];
        if (m.serial == 0) revert NotAdmittedNode(msg.sender);
        Round storage r = _rounds[round];
        uint32 required = r.quorum;
        if (m.serial > r.admissions) revert AdmittedAfterProposal(round, msg.sender);
        if (m.id <= PACKED_IDS) {
            uint56 bit = uint56(1) << (m.id - 1);
            if (r.approvers & bit != 0) revert AlreadyApproved(round, msg.sender);
            r.approvers |= bit;
        } else {
            _markMore(round, m.id, msg.sender);
        }
        uint32 approvals = r.approvals + 1;
        r.approvals = approvals;
        emit RoundApproved(round, msg.sender, approvals);
        if (approvals == required) {
            r.finalized = true;
            emit RoundFinalized(round, approvals, required);
        }
    }

    /// @notice The EIP-712 digest a node signs to approve this proposal of round `round` in
    ///         this contract's domain (name "Lethe", version "1", this chain, this address).
    function approvalDigest(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid
    ) public view returns (bytes32) {
        bytes32 domain = _domainSeparator();
        bytes32 structHash = keccak256(
            abi.encode(
                ROUND_APPROVAL_TYPEHASH,
                round,
                globalModelHash,
                keccak256(bytes(globalModelCid)),
                updatesRoot,
                keccak256(bytes(manifestCid))
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    /// @dev Checks and numbers the next round; emits its proposal; the caller stores it.
    function _propose(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid
    ) private returns (Round memory) {
        uint64 expected = lastRound + 1;
        if (round != expected) revert RoundNotNext(round, expected);
        uint256 count = _roster.length;
        uint256 required = _quorumFor(count);
        if (required == 0 || required > count) revert QuorumUnreachable(required, count);
        lastRound = round;
        emit RoundProposed(
            round, msg.sender, globalModelHash, globalModelCid, updatesRoot, manifestCid, uint32(required), count
        );
        return Round({
            quorum: uint32(required),
            approvals: 0,
            finalized: false,
            admissions: admissions,
            reward: stakePolicy.rewardPerRound,
            approvers: 0
        });
    }

    /// @dev Counts the signed approvals into the new round `r`, then stores and reports it.
    function _storeSigned(
        uint64 round,
        Round memory r,
        bytes32 digest,
        bytes calldata nodes,
        bytes calldata approvals
    ) private {
        _checkNodes(nodes);
        address[] memory signers = _countSigned(round, r, digest, nodes, approvals);
        _rounds[round] = r;
        emit RoundApprovedBy(round, signers, r.approvals);
        if (r.finalized) emit RoundFinalized(round, r.quorum, r.quorum);
    }

    /// @dev Reverts unless `nodes` lists every node ever admitted, in id order.
    function _checkNodes(bytes calldata nodes) private view {
        uint256 count = nodeIds;
        if (nodes.length != 20 * count) revert BadNodeList(nodes.length, count);
        bytes32 h;
        assembly {
            for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                mstore(0, h)
                mstore(32, shr(96, calldataload(add(nodes.offset, mul(k, 20)))))
                h := keccak256(0, 64)
            }
        }
        if (h != nodeIdsHash) revert BadNodeList(nodes.length, count);
    }

    /// @dev Recovers each signer of `digest` and counts it into `r` (in memory); reverts on
    ///      anything but distinct nodes admitted now (so by the round's proposal).
    function _countSigned(
        uint64 round,
        Round memory r,
        bytes32 digest,
        bytes calldata nodes,
        bytes calldata approvals
    ) private returns (address[] memory signers) {
        if (approvals.length % 66 != 0) revert BadSignatures(approvals.length);
        signers = new address[](approvals.length / 66);
        uint256 bits = r.approvers;
        uint256 lastId;
        for (uint256 i = 0; i < signers.length; ++i) {
            (uint256 id, address signer) = _recover(digest, approvals, i);
            // Strictly increasing ids: no node counted twice.
            if (id <= lastId || signer != _nodeAt(nodes, id)) revert InvalidSignature(i);
            lastId = id;
            if ((_activeIds[(id - 1) / 256] >> ((id - 1) % 256)) & 1 == 0) revert NotAdmittedNode(signer);
            if (id <= PACKED_IDS) bits |= 1 << (id - 1);
            else _markMore(round, uint32(id), signer);
            signers[i] = signer;
        }
        r.approvers = uint56(bits);
        uint32 total = r.approvals + uint32(signers.length);
        r.approvals = total;
        if (!r.finalized && total >= r.quorum) r.finalized = true;
    }

    /// @dev Node id `id` in the (checked) list of every node; address 0 past its end.
    function _nodeAt(bytes calldata nodes, uint256 id) private pure returns (address node) {
        if (id == 0 || id > nodes.length / 20) return address(0);
        assembly {
            node := shr(96, calldataload(add(nodes.offset, mul(sub(id, 1), 20))))
        }
    }

    /// @dev The id and recovered signer of approval `i` (address 0 if unrecoverable).
    function _recover(bytes32 digest, bytes calldata approvals, uint256 i)
        private
        view
        returns (uint256 id, address signer)
    {
        assembly {
            // ecrecover precompile (address 1) on (digest, v, r, s) in scratch memory.
            let at := add(approvals.offset, mul(i, 66))
            id := shr(240, calldataload(at))
            let vs := calldataload(add(at, 34))
            let p := mload(0x40)
            mstore(p, digest)
            mstore(add(p, 32), add(shr(255, vs), 27))
            mstore(add(p, 64), calldataload(add(at, 2)))
            mstore(add(p, 96), and(vs, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff))
            mstore(0, 0)
            if iszero(staticcall(gas(), 1, p, 128, 0, 32)) { revert(0, 0) }
            signer := mload(0)
        }
    }

    /// @dev Sets the approval bit of a node id above 56, refusing a second approval.
    function _markMore(uint64 round, uint32 id, address node) private {
        uint256 k = id - PACKED_IDS - 1;
        uint256 bit = 1 << (k % 256);
        mapping(uint256 => uint256) storage words = _moreApprovers[round];
        uint256 word = words[k / 256];
        if (word & bit != 0) revert AlreadyApproved(round, node);
        words[k / 256] = word | bit;
    }

    /// @dev Whether node id `id` (0: never admitted) approved round `round`.
    function _approved(uint64 round, uint32 id) private view returns (bool) {
        if (id == 0) return false;
        if (id <= PACKED_IDS) return (_rounds[round].approvers >> (id - 1)) & 1 == 1;
        uint256 k = id - PACKED_IDS - 1;
        return (_moreApprovers[round][k / 256] >> (k % 256)) & 1 == 1;
    }

    // ----- forgetting --------------------------------------------------------------------

    /// @notice Open forget request `requestId` for the record committed to by `recordCommitment`,
    ///         held by admitted node `node`: `committed` proves the node committed to it, under
    ///         the records root it signed for a finalized round and still current.
    ///         `label`, if not empty, is the id's preimage: the certificate names it, and the
    ///         node watching the chain certifies from the event without a coordinator message.
    /// @dev Without the proof the coordinator could name any node with any commitment, and
    ///      slash an honest node (and lock its stake) for a record it never held.
    function requestForget(
        bytes32 requestId,
        bytes32 recordCommitment,
        address node,
        string calldata label,
        RecordsProof calldata committed
    ) external onlyCoordinator {
        if (bytes(label).length != 0 && keccak256(bytes(label)) != requestId) revert LabelMismatch(requestId);
        Member memory m = _members[node];
        if (m.positionPlusOne == 0) revert NotAdmittedNode(node);
        _checkCommitted(recordCommitment, node, m.certifications, committed);
        Forget storage f = _forgets[requestId];
        if (f.state != ForgetState.None) revert RequestExists(requestId);
        f.state = ForgetState.Requested;
        f.node = node;
        uint64 window = stakePolicy.forgetDeadlineBlocks;
        if (window != 0) {
            f.answerable = true;
            f.deadline = uint64(block.number) + window;
            _stakes[node].openForgets += 1;
        }
        emit ForgetRequested(requestId, recordCommitment, msg.sender, node, label);
    }

    /// @dev Reverts unless `p` shows `node` signed a records root, for a finalized round and
    ///      naming its current certification count, with `leaf` in it.
    function _checkCommitted(bytes32 leaf, address node, uint32 certifications, RecordsProof calldata p)
        private
        view
    {
        if (!_rounds[p.round].finalized) revert RoundNotFinalized(p.round);
        if (p.certifications != certifications) revert StaleRecordsRoot(node, p.certifications, certifications);
        bytes32 digest = keccak256(
            abi.encodePacked(
                "\x19\x01",
                _domainSeparator(),
                keccak256(abi.encode(RECORDS_ROOT_TYPEHASH, p.round, p.root, p.count, p.certifications))
            )
        );
        if (_recoverCompact(digest, p.signature) != node) revert NotRecordsRootSigner(node);
        if (p.index >= p.count || _merkleRoot(leaf, p.index, p.count, p.proof) != p.root) revert NotCommitted(node, leaf);
    }

    /// @dev The root `proof` implies for `leaf` at `index` (< `count`) of `count` leaves
    ///      (protocol/merkle.py: parent keccak256(0x01 ‖ left ‖ right), an odd node out promoted
    ///      unchanged); 0 if the proof does not have exactly the length that position needs.
    function _merkleRoot(bytes32 leaf, uint256 index, uint256 count, bytes32[] calldata proof)
        private
        pure
        returns (bytes32 node)
    {
        node = leaf;
        uint256 used;
        while (count > 1) {
            if ((index ^ 1) < count) {
                if (used == proof.length) return bytes32(0);
                bytes32 sibling = proof[used++];
                node = index % 2 == 0
                    ? keccak256(abi.encodePacked(bytes1(0x01), node, sibling))
                    : keccak256(abi.encodePacked(bytes1(0x01), sibling, node));
            }
            index /= 2;
            count = (count + 1) / 2;
        }
        if (used != proof.length) return bytes32(0);
    }

    /// @notice The owning node certifies it deleted the record and retrained.
    /// @dev Only the node the request names, while admitted, can certify (never the
    ///      coordinator, see RoleConflict); its certificate's Merkle proof shows the record
    ///      was in its training data.
    function certifyForget(bytes32 requestId, string calldata certificateCid, bytes32 newModelHash)
        external
        onlyNode
    {
        Forget storage f = _forgets[requestId];
        ForgetState state = f.state;
        if (state == ForgetState.None) revert UnknownRequest(requestId);
        if (state != ForgetState.Requested) revert AlreadyCertified(requestId, f.node);
        if (f.node != msg.sender) revert NotRecordOwner(requestId, msg.sender);
        // Every records root the node signed before this certification is stale from now on.
        _members[msg.sender].certifications += 1;
        if (f.answerable) {
            // Certifying late still forgets, but pays the slash nobody has called yet.
            if (block.number > f.deadline) _slash(requestId, f);
            else _close(f);
        }
        uint64 afterRound = lastRound;
        f.state = ForgetState.Certified;
        f.afterRound = afterRound;
        emit ForgetCertified(requestId, msg.sender, certificateCid, newModelHash, afterRound);
    }

    /// @notice Close request `requestId`: finalized round `round` carries the retrained model.
    function completeForget(bytes32 requestId, uint64 round) external onlyCoordinator {
        Forget storage f = _forgets[requestId];
        ForgetState state = f.state;
        if (state == ForgetState.None) revert UnknownRequest(requestId);
        if (state == ForgetState.Requested) revert NotCertified(requestId);
        if (state == ForgetState.Completed) revert AlreadyCompleted(requestId);
        if (!_rounds[round].finalized) revert RoundNotFinalized(round);
        uint64 afterRound = f.afterRound;
        if (round <= afterRound) revert RoundBeforeCertificate(round, afterRound);
        f.state = ForgetState.Completed;
        emit ForgetCompleted(requestId, round, f.node);
    }

    // ----- stakes, rewards, slashing ----------------------------------------------------

    /// @notice Set the stake to join, the slash for a missed deadline, each approver's reward
    ///         per finalized round, the forget deadline and the unstake delay (in blocks).
    /// @dev Applies to admissions, rounds and requests from now on; 0s switch each part off.
    function setStakePolicy(
        uint128 requiredStake,
        uint128 slashAmount,
        uint96 rewardPerRound,
        uint64 forgetDeadlineBlocks,
        uint64 unstakeDelayBlocks
    ) external onlyOwner {
        stakePolicy = StakePolicy(requiredStake, slashAmount, rewardPerRound, forgetDeadlineBlocks, unstakeDelayBlocks);
        emit StakePolicySet(requiredStake, slashAmount, rewardPerRound, forgetDeadlineBlocks, unstakeDelayBlocks);
    }

    /// @notice Add the ether sent to the caller's stake (before admission, or to top up).
    function stake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        Stake storage s = _stakes[msg.sender];
        if (s.unlockBlock != 0) revert UnstakePending(msg.sender, s.unlockBlock);
        uint128 total = s.amount + uint128(msg.value);
        s.amount = total;
        emit Staked(msg.sender, msg.value, total);
    }

    /// @notice Start leaving: the stake unlocks `unstakeDelayBlocks` from now. The node stays
    ///         admitted, and answerable for forget requests, until it withdraws.
    function requestUnstake() external {
        Stake storage s = _stakes[msg.sender];
        if (s.amount == 0) revert ZeroAmount();
        if (s.unlockBlock != 0) revert UnstakePending(msg.sender, s.unlockBlock);
        uint64 unlockBlock = uint64(block.number) + stakePolicy.unstakeDelayBlocks;
        s.unlockBlock = unlockBlock;
        emit UnstakeRequested(msg.sender, s.amount, unlockBlock);
    }

    /// @notice After the delay, with no forget request open: leave the roster, take the stake.
    function withdrawStake() external {
        Stake storage s = _stakes[msg.sender];
        uint64 unlockBlock = s.unlockBlock;
        if (unlockBlock == 0) revert NoUnstakeRequested(msg.sender);
        if (block.number < unlockBlock) revert StakeLocked(msg.sender, unlockBlock);
        if (s.openForgets != 0) revert OpenForgets(msg.sender, s.openForgets);
        uint256 amount = s.amount;
        delete _stakes[msg.sender];
        if (_members[msg.sender].positionPlusOne != 0) _removeNode(msg.sender);
        emit StakeWithdrawn(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    /// @notice Add the ether sent to the reward pool.
    function fund() external payable {
        if (msg.value == 0) revert ZeroAmount();
        uint256 pool = rewardPool + msg.value;
        rewardPool = pool;
        emit RewardsFunded(msg.sender, msg.value, pool);
    }

    /// @notice Take the rewards of finalized rounds the caller approved.
    /// @dev Loops over the caller's own list of rounds, never over nodes.
    function claimRewards(uint64[] calldata rounds) external {
        uint256 owed;
        uint32 id = _members[msg.sender].id;
        for (uint256 i = 0; i < rounds.length; ++i) {
            uint64 round = rounds[i];
            Round storage r = _rounds[round];
            if (!r.finalized) revert RoundNotFinalized(round);
            if (!_approved(round, id)) revert NotApprover(round, msg.sender);
            if (rewardClaimed[round][msg.sender]) revert RewardAlreadyClaimed(round, msg.sender);
            rewardClaimed[round][msg.sender] = true;
            owed += r.reward;
            emit RewardClaimed(round, msg.sender, r.reward);
        }
        uint256 pool = rewardPool;
        if (owed > pool) revert RewardPoolShort(owed, pool);
        rewardPool = pool - owed;
        _pay(msg.sender, owed);
    }

    /// @notice Anyone: the node named by `requestId` missed its forget deadline; move
    ///         `slashAmount` of its stake (or what is left) to the reward pool.
    function slash(bytes32 requestId) external {
        Forget storage f = _forgets[requestId];
        ForgetState state = f.state;
        if (state == ForgetState.None) revert UnknownRequest(requestId);
        if (f.slashed) revert AlreadySlashed(requestId);
        if (state != ForgetState.Requested) revert AlreadyCertified(requestId, f.node);
        if (!f.answerable) revert NoDeadline(requestId);
        if (block.number <= f.deadline) revert DeadlineNotPassed(requestId, f.deadline);
        _slash(requestId, f);
    }

    function _close(Forget storage f) private {
        f.answerable = false;
        _stakes[f.node].openForgets -= 1;
    }

    function _slash(bytes32 requestId, Forget storage f) private {
        _close(f);
        f.slashed = true;
        Stake storage s = _stakes[f.node];
        uint128 amount = stakePolicy.slashAmount;
        if (amount > s.amount) amount = s.amount;
        uint128 left = s.amount - amount;
        s.amount = left;
        rewardPool += amount;
        emit ForgetSlashed(requestId, f.node, msg.sender, amount, left);
    }

    function _pay(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

    // ----- views -------------------------------------------------------------------------

    /// @notice A node's stake, the block it unlocks at (0: no unstake asked) and its open
    ///         answerable forget requests.
    function stakeOf(address node) external view returns (uint256 amount, uint64 unlockBlock, uint32 openForgets) {
        Stake storage s = _stakes[node];
        return (s.amount, s.unlockBlock, s.openForgets);
    }

    /// @notice A request's deadline block (0: none), and whether its node was slashed.
    function forgetDeadline(bytes32 requestId) external view returns (uint64 deadline, bool slashed) {
        Forget storage f = _forgets[requestId];
        return (f.deadline, f.slashed);
    }

    /// @notice Whether `node` approved round `round` (by itself or by a signature it gave).
    function hasApproved(uint64 round, address node) external view returns (bool) {
        return _approved(round, _members[node].id);
    }

    /// @notice What each approver of a round earns once it is finalized.
    function roundReward(uint64 round) external view returns (uint256) {
        return _rounds[round].reward;
    }

    /// @notice keccak256(abi.encode(globalModelHash, updatesRoot)) of a round proposed by
    ///         `proposeRound`; 0 for one proposed with signed approvals, or never proposed.
    function roundProposal(uint64 round) external view returns (bytes32) {
        return _proposals[round];
    }

    /// @notice Approvals a round proposed now would need.
    function quorum() external view returns (uint256) {
        return _quorumFor(_roster.length);
    }

    function nodeCount() external view returns (uint256) {
        return _roster.length;
    }

    /// @notice How many forget requests `node` certified: what its next records root names.
    function certificationsOf(address node) external view returns (uint32) {
        return _members[node].certifications;
    }

    function isNode(address account) external view returns (bool) {
        return _members[account].positionPlusOne != 0;
    }

    /// @notice Admitted nodes and their X25519 keys (zero until registered), in roster order.
    function roster() external view returns (address[] memory nodes, bytes32[] memory keys) {
        nodes = _roster;
        keys = new bytes32[](nodes.length);
        for (uint256 i = 0; i < nodes.length; ++i) {
            keys[i] = nodeKey[nodes[i]];
        }
    }

    function roundState(uint64 round) external view returns (uint32 quorum_, uint32 approvals, bool finalized) {
        Round storage r = _rounds[round];
        return (r.quorum, r.approvals, r.finalized);
    }

    function forgetState(bytes32 requestId) external view returns (ForgetState state, address node, uint64 afterRound) {
        Forget storage f = _forgets[requestId];
        return (f.state, f.node, f.afterRound);
    }

    function _quorumFor(uint256 count) private view returns (uint256) {
        uint256 configured = configuredQuorum;
        return configured == 0 ? (2 * count + 2) / 3 : configured;
    }
}
